"""Tests for tokenizer.py and the GPT-2 BPE fetch CI runs (.ci/gpt2_bpe.py)."""
import hashlib
import importlib.util
import io
import os
import tarfile

import pytest

from tokenizer import BPE_CACHE_NAME, BPE_SHA256, gpt2_encoding, get_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo: scripts run by path
EOT = "<|endoftext|>"
TEXTS = ["", "hello world", "héllo wörld ✓ 日本語", "two\nlines\n\n", f"literal {EOT} inside", "  spaces  "]


def bpe_script():
    spec = importlib.util.spec_from_file_location("gpt2_bpe", os.path.join(ROOT, ".ci", "gpt2_bpe.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_line_exit(excinfo):
    msg = str(excinfo.value.code)
    assert msg and "\n" not in msg
    return msg


def test_bytes_tokenizer():
    """ids are the UTF-8 bytes and end-of-text is 256, written and read as "<|endoftext|>"; any ids decode,
    bytes that are no UTF-8 (a sample cut inside a character) as U+FFFD."""
    encode, decode = get_tokenizer({"tokenizer": "bytes"})
    assert encode("hé") == [104, 195, 169] and encode("") == []
    assert encode(f"a{EOT}b") == [97, 256, 98] and encode(EOT + EOT) == [256, 256]
    for text in TEXTS + [f"{EOT}x{EOT}"]:
        assert decode(encode(text)) == text
    assert decode([104, 195]) == "h\ufffd" and decode([255, 256, 10]) == f"\ufffd{EOT}\n"


def test_gpt2_tokenizer():
    enc = gpt2_encoding()
    assert enc.n_vocab == 50257 and enc.eot_token == 50256
    assert enc.encode_ordinary("Hello world") == [15496, 995]  # GPT-2's ids
    encode, decode = get_tokenizer({"tokenizer": "gpt2"})
    assert encode("Hi" + EOT) == [17250, 50256] and decode(encode("héllo ✓")) == "héllo ✓"
    with pytest.raises(ValueError, match="not a recall token"):
        get_tokenizer({"tokenizer": "recall", "itos": ["<eot>", "?"]})[0]("? k3")


def test_bpe_from_sdist_checks_sha256(tmp_path):
    sdist = tmp_path / "openai_whisper-0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        data = b"not the BPE"
        info = tarfile.TarInfo("openai_whisper-0/whisper/assets/gpt2.tiktoken")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(SystemExit) as e:
        bpe_script().install(str(sdist), str(tmp_path / "cache" / BPE_CACHE_NAME))
    assert "sha256" in one_line_exit(e) and not (tmp_path / "cache").exists()


def test_bpe_fetch_from_pypi(tmp_path):
    path = tmp_path / "cache" / BPE_CACHE_NAME
    try:
        bpe_script().fetch(str(path))
    except SystemExit as e:
        pytest.skip(f"pip download did not work here: {e}")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == BPE_SHA256
    assert os.listdir(path.parent) == [path.name]  # no temp file left
