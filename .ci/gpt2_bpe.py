"""
GPT-2's BPE file for machines that reach PyPI but not tiktoken's download: the identical file ships
inside the openai-whisper sdist (whisper/assets/gpt2.tiktoken). This copies it, sha256-checked, into
tiktoken's cache (tokenizer.bpe_cache_dir()). CI runs it before the tests.

    python .ci/gpt2_bpe.py                 # pip download the sdist, then copy the file
    python .ci/gpt2_bpe.py --sdist=PATH    # from an sdist already here
"""
import glob
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import write_atomic  # noqa: E402
from tokenizer import BPE_CACHE_NAME, BPE_SHA256, bpe_cache_dir  # noqa: E402

WHISPER = "openai-whisper==20250625"
MEMBER = "whisper/assets/gpt2.tiktoken"


def install(sdist, path):
    """Copy the BPE file out of a whisper sdist to path if its sha256 is right."""
    with tarfile.open(sdist) as tf:
        member = next((m for m in tf.getmembers() if m.name.endswith("/" + MEMBER)), None)
        data = tf.extractfile(member).read() if member else b""
    if hashlib.sha256(data).hexdigest() != BPE_SHA256:
        raise SystemExit(f"{sdist} holds no {MEMBER} with sha256 {BPE_SHA256}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, lambda f: f.write(data), binary=True)


def fetch(path):
    """pip download the whisper sdist (no install, no dependencies) and install its BPE file at path."""
    print(f"fetching GPT-2's BPE from the {WHISPER} sdist on PyPI into {os.path.dirname(path)}")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", tmp, WHISPER]
        r = subprocess.run(cmd, capture_output=True, text=True)
        sdists = glob.glob(os.path.join(tmp, "*.tar.gz"))
        if r.returncode or not sdists:
            why = (r.stderr.strip().splitlines() or ["no sdist"])[-1]
            raise SystemExit(f"cannot get GPT-2's BPE: pip download {WHISPER} failed ({why})")
        install(sdists[0], path)


if __name__ == "__main__":
    target = os.path.join(bpe_cache_dir(), BPE_CACHE_NAME)
    sdist = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--sdist=")), None)
    if sdist:
        install(sdist, target)
    elif os.path.exists(target) and hashlib.sha256(open(target, "rb").read()).hexdigest() == BPE_SHA256:
        print(f"GPT-2's BPE is in {os.path.dirname(target)} already")
    else:
        fetch(target)
