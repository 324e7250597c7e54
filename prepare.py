"""
Prepare a dataset as uint16 token shards for train.py.

    python prepare.py                                        # OpenWebText, GPT-2 BPE
    python prepare.py --dataset=fineweb                      # FineWeb-edu sample-10BT, streamed
    python prepare.py --dataset=text --input='books/*.txt'   # your own files, one file = one document
    python prepare.py --dataset=stdlib --tokenizer=bytes     # this Python's standard library, offline, as bytes
    python prepare.py --dataset=recall                       # synthetic long-range recall, offline, seconds
    python prepare.py --dataset=recall --name=recall_long --n_seg=32   # a second set, beside data/recall/

Output: data/<dataset>/ (data/<name>/ with --name): train_000.bin, ..., val_000.bin, ... and meta.json,
written last: a directory is complete iff it holds meta.json. Read a shard with
np.memmap(path, dtype=np.uint16, mode="r"); every document ends with the end-of-text token meta["eot"].
Train and val are split by document. Other scripts use gpt2_encoding() and get_tokenizer(meta) from here.

Text sets are GPT-2's BPE (--tokenizer=gpt2, vocab 50257, eot 50256) or bytes (--tokenizer=bytes): ids 0..255
are the UTF-8 bytes, and end-of-text, which needs an id of its own, is 256 (vocab_size 257, still uint16 shards);
get_tokenizer decodes it as "<|endoftext|>", as GPT-2's does, and bytes that are no UTF-8 as U+FFFD.
"""
import collections
import difflib
import functools
import glob
import hashlib
import json
import math
import multiprocessing
import os
import pathlib
import subprocess
import sys
import sysconfig
import tarfile
import tempfile

import numpy as np
import tiktoken
from tqdm import tqdm

from configurator import configure, override

# -----------------------------------------------------------------------------
# default config values, override on the command line with --key=value
dataset = "openwebtext"  # openwebtext | fineweb | text | stdlib | recall
data_dir = "data"  # output goes to data_dir/name/
name = ""  # "" = the dataset's own name; another name keeps a second set of the same kind beside the first
shard_size = 100_000_000  # tokens per shard
force = False  # redo even if data_dir/name/meta.json says it is prepared already
num_proc = max(1, (os.cpu_count() or 1) // 2)  # tokenizer processes
# openwebtext, fineweb, text, stdlib
tokenizer = "gpt2"  # gpt2 (GPT-2's BPE) | bytes (UTF-8 bytes, end-of-text 256: see above)
val_fraction = 0.0  # share of documents that go to val (every 1/val_fraction-th, the first one too);
                    # 0 = 0.05 for stdlib (~90 of its ~1,800 files; 0.0005 would leave val one file), else 0.0005
max_docs = 0  # stop after this many documents (0 = all): a small subset for a quick try
streaming = True  # False downloads the whole source into the HF cache first (resumable, reusable)
hf_path = ""  # set any of hf_path/hf_name/hf_data_files to read another source than SOURCES below:
hf_name = ""  # load_dataset(hf_path, hf_name or None, data_files=hf_data_files or None), column "text",
hf_data_files = ""  # e.g. --hf_path=parquet --hf_data_files='hf://datasets/USER/REPO/data/*.parquet'
input = ""  # text: a glob of local files, e.g. 'books/*.txt'; stdlib: the directory ("" = this Python's stdlib)
bad_files = "skip"  # text, stdlib: files that are not UTF-8: skip (counted, the first few named) | stop (naming it)
# recall: segment 0 states n_facts facts "key value ...", each asked once at the end of a later segment
seg_len = 16  # tokens per segment
n_seg = 8  # segments per sample: the distance from a fact to its question reaches n_seg-1
n_facts = 1  # facts per sample (2*n_facts <= seg_len); a later segment asks up to seg_len//3 of them
n_keys = 32  # key tokens (each sample uses n_facts distinct ones)
n_values = 16  # value tokens: chance accuracy is 1/n_values
n_filler = 32  # distractor tokens, a vocabulary of their own
n_train = 100_000  # samples
n_val = 2_000
seed = 1337  # train uses seed, val seed+1
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith("_") and isinstance(v, (bool, int, float, str))]

DATASETS = ("openwebtext", "fineweb", "text", "stdlib", "recall")
SOURCES = {  # load_dataset() arguments, tried in order until one opens; the split is "train", the text in column "text"
    # load_dataset("openwebtext") runs a loading script, which datasets>=4 no longer does: read the parquet files
    # of Skylion007/openwebtext, else one of two parquet mirrors of it; another: --hf_path/--hf_data_files above
    "openwebtext": [dict(path="parquet", data_files="hf://datasets/Skylion007/openwebtext/plain_text/train-*.parquet"),
                    dict(path="dylanebert/openwebtext"),
                    dict(path="vietgpt/openwebtext_en")],
    "fineweb": [dict(path="HuggingFaceFW/fineweb-edu", name="sample-10BT")],
}
# the settings that decide a dataset's output: a rerun with the same ones finds it prepared already
TEXT_SETTINGS = ("shard_size", "tokenizer", "val_fraction", "max_docs", "hf_path", "hf_name", "hf_data_files",
                 "input")
RECALL_SETTINGS = ("shard_size", "seg_len", "n_seg", "n_facts", "n_keys", "n_values", "n_filler", "n_train", "n_val",
                   "seed")
BYTES_EOT = 256  # --tokenizer=bytes: the UTF-8 bytes take ids 0..255, so end-of-text is the next one
EOT_TEXT = "<|endoftext|>"  # how end-of-text decodes, in both text tokenizers

# GPT-2's BPE is tiktoken's r50k_base file, shipped byte-identical in the openai-whisper sdist on PyPI
WHISPER = "openai-whisper==20250625"
BPE_MEMBER = "whisper/assets/gpt2.tiktoken"
BPE_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
BPE_CACHE_NAME = "0ea1e91bbb3a60f729a8dc8f777fd2fc07cd8df4"  # sha1 of its URL: tiktoken's cache key
BPE_HELP = ("run `python -c 'import prepare; prepare.gpt2_encoding()'` where PyPI is reachable and copy "
            f"~/.cache/memogpt/tiktoken/ here (or set TIKTOKEN_CACHE_DIR to a dir holding {BPE_CACHE_NAME}); "
            "--dataset=recall needs no BPE")


def resolve(overrides):
    """The defaults above with overrides applied; a mistyped key or value stops with one line."""
    cfg = override({k: globals()[k] for k in config_keys}, overrides, "prepare")
    if cfg["dataset"] not in DATASETS:
        close = difflib.get_close_matches(cfg["dataset"], DATASETS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SystemExit(f"unknown dataset {cfg['dataset']!r} ({hint}choose one of {', '.join(DATASETS)})")
    cfg["val_fraction"] = cfg["val_fraction"] or (0.05 if cfg["dataset"] == "stdlib" else 0.0005)
    if cfg["dataset"] == "stdlib" and not cfg["input"]:
        cfg["input"] = sysconfig.get_paths()["stdlib"]  # in the settings: another Python's stdlib is another set
    if cfg["shard_size"] < 1 or cfg["num_proc"] < 1 or not 0 <= cfg["val_fraction"] < 1:
        raise SystemExit("need shard_size >= 1, num_proc >= 1 and 0 <= val_fraction < 1")
    if cfg["bad_files"] not in ("skip", "stop"):
        raise SystemExit(f"--bad_files={cfg['bad_files']}: choose skip or stop")
    if cfg["tokenizer"] not in ("gpt2", "bytes") or (cfg["dataset"] == "recall" and cfg["tokenizer"] != "gpt2"):
        raise SystemExit(f"--tokenizer={cfg['tokenizer']}: choose gpt2 or bytes, for a text set (recall has its own)")
    return cfg


def check_uint16(vocab_size, name):
    if vocab_size > 2**16:
        raise SystemExit(f"the {name} vocabulary has {vocab_size} tokens: ids do not fit uint16 shards "
                         "(65536 at most)")


@functools.lru_cache(maxsize=None)
def gpt2_encoding():
    """GPT-2's BPE as a tiktoken Encoding; offline once the tiktoken cache holds the file."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.path.expanduser("~/.cache/memogpt/tiktoken")
    os.environ["TIKTOKEN_CACHE_DIR"] = cache_dir  # where tiktoken looks, instead of a temp dir
    path = os.path.join(cache_dir, BPE_CACHE_NAME)
    if not (os.path.exists(path) and _sha256(pathlib.Path(path).read_bytes()) == BPE_SHA256):
        fetch_gpt2_bpe(path)
    # r50k_base is GPT-2's encoding (same ranks, pattern and <|endoftext|>) read from that one file;
    # tiktoken's "gpt2" would download vocab.bpe and encoder.json instead
    enc = tiktoken.get_encoding("r50k_base")
    check_uint16(enc.n_vocab, "gpt2")
    return enc


def fetch_gpt2_bpe(path):
    """Put GPT-2's BPE file at path, taken from the openai-whisper sdist on PyPI."""
    print(f"fetching GPT-2's BPE from the {WHISPER} sdist on PyPI into {os.path.dirname(path)}")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", tmp,
               WHISPER]
        r = subprocess.run(cmd, capture_output=True, text=True)
        sdists = glob.glob(os.path.join(tmp, "*.tar.gz"))
        if r.returncode or not sdists:
            why = (r.stderr.strip().splitlines() or ["no sdist"])[-1]
            raise SystemExit(f"cannot get GPT-2's BPE: pip download {WHISPER} failed ({why}); {BPE_HELP}")
        install_gpt2_bpe(sdists[0], path)


def install_gpt2_bpe(sdist, path):
    """Copy the BPE file out of a whisper sdist to path if its sha256 is right; atomically."""
    with tarfile.open(sdist) as tf:
        member = next((m for m in tf.getmembers() if m.name.endswith("/" + BPE_MEMBER)), None)
        data = tf.extractfile(member).read() if member else b""
    if _sha256(data) != BPE_SHA256:
        raise SystemExit(f"{sdist} holds no {BPE_MEMBER} with sha256 {BPE_SHA256}; {BPE_HELP}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)  # readers see the whole file or none


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def get_tokenizer(meta):
    """(encode, decode) for a prepared dataset: encode(str) -> list[int], decode(list[int]) -> str.
    In the text tokenizers "<|endoftext|>" encodes to end-of-text and end-of-text decodes to it."""
    if meta["tokenizer"] == "gpt2":
        enc = gpt2_encoding()
        return (lambda s: enc.encode(s, allowed_special={EOT_TEXT})), enc.decode
    if meta["tokenizer"] == "bytes":
        pieces = [bytes([i]) for i in range(256)] + [EOT_TEXT.encode()]

        def encode(s):
            ids = []
            for n, part in enumerate(s.split(EOT_TEXT)):
                ids += [BYTES_EOT] * (n > 0) + list(part.encode())
            return ids

        # a sample can end inside a character, or be no UTF-8 at all: U+FFFD, never an error
        return encode, lambda ids: b"".join(pieces[i] for i in ids).decode("utf-8", errors="replace")
    if meta["tokenizer"] == "recall":
        itos = meta["itos"]
        stoi = {s: i for i, s in enumerate(itos)}

        def encode(s):
            unknown = [w for w in s.split() if w not in stoi]
            if unknown:
                raise ValueError(f"{unknown[0]!r} is not a recall token (they are {' '.join(itos[:4])} ...)")
            return [stoi[w] for w in s.split()]

        return encode, lambda ids: " ".join(itos[i] for i in ids)
    raise SystemExit(f"unknown tokenizer {meta['tokenizer']!r} in meta.json (known: gpt2, bytes, recall)")


# -----------------------------------------------------------------------------
# writing

class ShardWriter:
    """Appends tokens to split_000.bin, split_001.bin, ...; each is renamed into place once complete."""

    def __init__(self, out_dir, split, shard_size):
        self.out_dir, self.split, self.shard_size = out_dir, split, shard_size
        self.shards = {}  # complete shard name -> tokens
        self.f, self.n = None, 0

    def write(self, tokens):
        tokens = np.asarray(tokens, dtype=np.uint16).ravel()
        while len(tokens):
            if self.f is None:
                self.name = f"{self.split}_{len(self.shards):03d}.bin"
                self.f = open(os.path.join(self.out_dir, self.name + ".tmp"), "wb")
            take = min(len(tokens), self.shard_size - self.n)
            self.f.write(tokens[:take].tobytes())
            self.n, tokens = self.n + take, tokens[take:]
            if self.n == self.shard_size:
                self._finish()

    def _finish(self):
        self.f.close()
        path = os.path.join(self.out_dir, self.name)
        os.replace(path + ".tmp", path)
        self.shards[self.name] = self.n
        self.f, self.n = None, 0

    def close(self):
        if self.f is not None:
            self._finish()
        return self.shards


def remove_outputs(out_dir):
    """meta.json first: shards without it count as unfinished."""
    for pattern in ("meta.json", "meta.json.tmp", "train_*.bin*", "val_*.bin*"):
        for path in glob.glob(os.path.join(out_dir, pattern)):
            os.remove(path)


def write_json_atomic(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)


# -----------------------------------------------------------------------------
# text sources: HF datasets (openwebtext, fineweb, any other) and local files (text, stdlib), one code path

def local_files(cfg):
    """The files of a local text set, sorted: --input's glob (text), or every .py file under --input (stdlib)
    but the installed packages'."""
    if cfg["dataset"] == "text":
        files = glob.glob(os.path.expanduser(cfg["input"]), recursive=True)
    else:
        root = cfg["input"]
        files = [f for f in glob.glob(os.path.join(glob.escape(root), "**", "*.py"), recursive=True)
                 if not {"site-packages", "dist-packages"} & set(pathlib.Path(f).relative_to(root).parts)]
    return sorted(f for f in files if os.path.isfile(f))


def sources_of(cfg):
    """load_dataset() arguments for the text datasets: a list of sources to try in order."""
    if cfg["dataset"] in ("text", "stdlib"):
        if not cfg["input"]:
            raise SystemExit("--dataset=text needs --input='path/*.txt' (one file = one document)")
        files = local_files(cfg)
        if not files:
            raise SystemExit(f"--input={cfg['input']!r} matches no files")
        bad = [f for f in files if not _is_utf8(f)]  # read here: datasets' text reader fails without naming them
        if bad and cfg["bad_files"] == "stop":
            raise SystemExit(f"{bad[0]} is not UTF-8 text: remove it from --input, or pass --bad_files=skip")
        if bad:
            print(f"skipping {len(bad)} of {len(files)} files that are not UTF-8 text: {', '.join(bad[:3])}"
                  + (", ..." if len(bad) > 3 else ""))
            files = sorted(set(files) - set(bad))
        if not files:
            raise SystemExit(f"--input={cfg['input']!r} matches no UTF-8 text files")
        return [dict(path="text", data_files=files, sample_by="document")]
    if cfg["hf_path"]:
        return [dict(path=cfg["hf_path"], name=cfg["hf_name"] or None, data_files=cfg["hf_data_files"] or None)]
    if cfg["hf_name"] or cfg["hf_data_files"]:
        raise SystemExit("--hf_name and --hf_data_files need --hf_path (a hub id, or parquet/json/csv/text)")
    return SOURCES[cfg["dataset"]]


def _is_utf8(path):
    try:
        with open(path, encoding="utf-8") as f:
            while f.read(1 << 24):  # in pieces: a file can be larger than memory
                pass
    except UnicodeDecodeError:
        return False
    return True


def _where(cfg, source):
    if cfg["dataset"] in ("text", "stdlib"):
        return cfg["input"]
    return source.get("data_files") or " ".join(filter(None, (source["path"], source.get("name"))))


def _offline(where, e, out_dir):
    return (f"cannot reach {where} ({type(e).__name__}); offline, use --dataset=recall or --dataset=text "
            f"--input='path/*.txt', or run prepare.py where the network is reachable and copy {out_dir} here")


def open_source(cfg, sources, out_dir):
    """The "train" split of the first of sources that load_dataset opens, and that source."""
    import datasets  # slow to import: only here, so importing prepare stays light

    failed = []
    for source in sources:
        try:
            ds = datasets.load_dataset(**source, split="train", streaming=cfg["streaming"])
        except Exception as e:
            failed.append((_where(cfg, source), e))
            continue
        tried = f" ({', '.join(w for w, _ in failed)} did not open)" if failed else ""
        print(f"{cfg['dataset']}: reading {_where(cfg, source)}{tried}")
        return ds, source
    if all(_is_network_error(e) for _, e in failed):
        raise SystemExit(_offline(", ".join(w for w, _ in failed), failed[0][1], out_dir))
    tried = "; ".join(f"{w} ({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]})" for w, e in failed)
    raise SystemExit(f"no source of {cfg['dataset']} opened. Tried: {tried}. Pass another with --hf_path=parquet "
                     "--hf_data_files='hf://datasets/USER/REPO/data/*.parquet' (or --hf_path=USER/REPO)")


def _is_network_error(e):
    while e is not None:  # datasets and huggingface_hub wrap the transport's error, so walk the chain
        if {c.__name__ for c in type(e).__mro__} & {"ConnectionError", "TimeoutError", "TransportError"}:
            return True
        e = e.__cause__ or e.__context__
    return False


def _encode_batch(tokenizer, texts):
    if tokenizer == "bytes":
        return [np.append(np.frombuffer(t.encode(), dtype=np.uint8), BYTES_EOT).astype(np.uint16) for t in texts]
    enc = gpt2_encoding()  # per process, loaded from the cache
    return [np.array(ids + [enc.eot_token], dtype=np.uint16) for ids in enc.encode_ordinary_batch(texts)]


def _ordered_map(fn, items, procs):
    """map(fn, items) over a process pool, keeping at most 2*procs batches in flight (a stream
    can be much larger than memory, and Pool.imap would read it all ahead)."""
    if procs == 1:
        yield from map(fn, items)
        return
    with multiprocessing.Pool(procs) as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= 2 * procs:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def tokenize_text(cfg, out_dir, sources):
    writers = {split: ShardWriter(out_dir, split, cfg["shard_size"]) for split in ("train", "val")}
    docs = {"train": 0, "val": 0}
    f, i = cfg["val_fraction"], 0
    ds, source = open_source(cfg, sources, out_dir)
    try:
        if cfg["max_docs"]:
            ds = ds.take(cfg["max_docs"])
        total = cfg["max_docs"] or (None if cfg["streaming"] else len(ds))
        batches = (batch["text"] for batch in ds.iter(batch_size=256))
        with tqdm(total=total, unit="docs", desc=f"tokenizing {cfg['dataset']}") as bar:
            encode = functools.partial(_encode_batch, cfg["tokenizer"])
            for encoded in _ordered_map(encode, batches, cfg["num_proc"]):
                parts = {"train": [], "val": []}
                for ids in encoded:
                    split = "val" if math.ceil((i + 1) * f) > math.ceil(i * f) else "train"
                    parts[split].append(ids)
                    docs[split] += 1
                    i += 1
                for split, arrays in parts.items():
                    if arrays:
                        writers[split].write(np.concatenate(arrays))
                bar.update(len(encoded))
    except Exception as e:  # after the source opened: no other is tried, its documents are in the shards already
        if not _is_network_error(e):
            raise
        raise SystemExit(_offline(_where(cfg, source), e, out_dir)) from None
    if not docs["train"]:
        raise SystemExit(f"{cfg['dataset']} gave {i} document(s): need at least 2, val takes the first")
    shards = {**writers["train"].close(), **writers["val"].close()}
    described = cfg["input"] if cfg["dataset"] in ("text", "stdlib") else source  # not a list of maybe many files
    if cfg["tokenizer"] == "bytes":
        vocab = dict(tokenizer="bytes", vocab_size=BYTES_EOT + 1, eot=BYTES_EOT,
                     ids=f"0..255: the UTF-8 bytes; {BYTES_EOT}: end-of-text, decoded as {EOT_TEXT}")
    else:
        enc = gpt2_encoding()
        vocab = dict(tokenizer="gpt2", vocab_size=enc.n_vocab, eot=enc.eot_token)
    return dict(**vocab, source=described, train_docs=docs["train"], val_docs=docs["val"], shards=shards)


# -----------------------------------------------------------------------------
# recall: the synthetic long-range recall set

QUESTION = 1  # the id of "?": the fact's key and its value (the answer) follow it


def recall_vocab(cfg):
    """Token strings by id: 0 = <eot> (also padding), 1 = ? (question marker), then keys, values, filler."""
    return (["<eot>", "?"] + [f"k{j}" for j in range(cfg["n_keys"])] + [f"v{j}" for j in range(cfg["n_values"])]
            + [f"f{j}" for j in range(cfg["n_filler"])])


def recall_first_ids(cfg):
    """The first id of the keys, of the values and of the filler in recall_vocab."""
    return 2, 2 + cfg["n_keys"], 2 + cfg["n_keys"] + cfg["n_values"]


def recall_samples(n, cfg, rng):
    """n samples of n_seg segments (n, n_seg*seg_len) of filler: segment 0 opens with the n_facts facts
    "k v k v ...", and each fact is asked once, "? k v" (v the answer), in a random later segment; the
    questions of a segment close it, up to seg_len // 3 of them, so several facts can share a segment
    (each (segment, place) is drawn alike). No answer gives another away, and the first segments of a
    sample are a valid sample too."""
    S, n_seg, F = cfg["seg_len"], cfg["n_seg"], cfg["n_facts"]
    key0, val0, fil0 = recall_first_ids(cfg)
    x = fil0 + rng.integers(cfg["n_filler"], size=(n, n_seg * S))
    keys = key0 + rng.random((n, cfg["n_keys"])).argsort(axis=1)[:, :F]  # distinct within a sample
    values = val0 + rng.integers(cfg["n_values"], size=(n, F))
    x[:, 0:2 * F:2], x[:, 1:2 * F:2] = keys, values
    per_seg = S // 3
    slot = rng.random((n, (n_seg - 1) * per_seg)).argsort(axis=1)[:, :F]  # (n, F) distinct question slots
    asked_in = 1 + slot // per_seg
    # a segment's questions in the random order of their slots, closing it
    order = ((asked_in[:, :, None] == asked_in[:, None, :]) & (slot[:, None, :] < slot[:, :, None])).sum(2)
    answers = asked_in * S + S - 1 - 3 * order
    rows = np.arange(n)[:, None]
    x[rows, answers - 2], x[rows, answers - 1], x[rows, answers] = QUESTION, keys, values
    return x.astype(np.uint16)


def check_recall(cfg):
    """Stop with one line on recall settings that make no valid sample."""
    S, n_seg, F = cfg["seg_len"], cfg["n_seg"], cfg["n_facts"]
    sample_len = n_seg * S
    if not (1 <= F <= (n_seg - 1) * (S // 3) and S >= max(3, 2 * F) and cfg["n_keys"] >= F
            and min(cfg["n_values"], cfg["n_filler"]) >= 1):
        raise SystemExit("recall needs n_seg >= 2, seg_len >= 3, 1 <= n_facts <= (n_seg-1) * (seg_len//3) questions, "
                         "the facts in segment 0 (2*n_facts <= seg_len), n_keys >= n_facts and n_values, n_filler >= 1; "
                         f"got n_facts={F}, n_seg={n_seg}, seg_len={S}, n_keys={cfg['n_keys']}, "
                         f"n_values={cfg['n_values']}, n_filler={cfg['n_filler']}")
    if cfg["shard_size"] < sample_len:
        raise SystemExit(f"shard_size {cfg['shard_size']} is below one recall sample ({sample_len} tokens)")
    check_uint16(len(recall_vocab(cfg)), "recall")


def make_recall(cfg, out_dir):
    S, n_seg = cfg["seg_len"], cfg["n_seg"]
    sample_len, itos = n_seg * S, recall_vocab(cfg)
    shard_size = cfg["shard_size"] // sample_len * sample_len  # samples never straddle shards
    shards, chunk = {}, 16384  # samples made at a time, to bound memory
    for split, n, split_seed in (("train", cfg["n_train"], cfg["seed"]), ("val", cfg["n_val"], cfg["seed"] + 1)):
        rng, writer = np.random.default_rng(split_seed), ShardWriter(out_dir, split, shard_size)
        for start in tqdm(range(0, n, chunk), desc=f"writing recall {split}", unit="chunk"):
            writer.write(recall_samples(min(chunk, n - start), cfg, rng))
        shards.update(writer.close())
    val0 = recall_first_ids(cfg)[1]
    return dict(tokenizer="recall", vocab_size=len(itos), eot=0, itos=itos, sample_len=sample_len, seg_len=S,
                n_seg=n_seg, n_facts=cfg["n_facts"], question=QUESTION, n_values=cfg["n_values"],
                value_ids=list(range(val0, val0 + cfg["n_values"])),
                train_samples=cfg["n_train"], val_samples=cfg["n_val"], shards=shards)


# -----------------------------------------------------------------------------

def prepare(**overrides):
    """Prepare data_dir/name (see the settings above); returns its meta.json as a dict."""
    cfg = resolve(overrides)
    out_dir = os.path.join(cfg["data_dir"], cfg["name"] or cfg["dataset"])
    meta_path = os.path.join(out_dir, "meta.json")
    recall = cfg["dataset"] == "recall"
    settings = {k: cfg[k] for k in (RECALL_SETTINGS if recall else TEXT_SETTINGS)}
    settings["dataset"] = cfg["dataset"]
    sources = check_recall(cfg) if recall else sources_of(cfg)  # errors come before anything is removed
    if os.path.exists(meta_path) and not cfg["force"]:
        with open(meta_path) as fp:
            meta = json.load(fp)
        if meta.get("settings") == settings:
            print(f"{out_dir} is already prepared ({meta['train_tokens']:,} train and {meta['val_tokens']:,} val "
                  "tokens); --force=True redoes it")
            return meta
        changed = [k for k in settings if meta.get("settings", {}).get(k) != settings[k]]
        raise SystemExit(f"{out_dir} was prepared with other settings ({', '.join(changed)}); "
                         "--force=True redoes it")
    if cfg["tokenizer"] == "gpt2" and not recall:
        gpt2_encoding()  # fetched if need be, before anything is removed
    os.makedirs(out_dir, exist_ok=True)
    remove_outputs(out_dir)  # stale shards of an earlier or interrupted run
    try:
        meta = make_recall(cfg, out_dir) if recall else tokenize_text(cfg, out_dir, sources)
    except BaseException:
        remove_outputs(out_dir)  # never leave shards that look usable
        if not os.listdir(out_dir):
            os.rmdir(out_dir)
        raise
    meta["dtype"] = "uint16"
    for split in ("train", "val"):
        meta[f"{split}_tokens"] = sum(n for name, n in meta["shards"].items() if name.startswith(split))
    meta["settings"] = settings
    write_json_atomic(meta_path, meta)  # last: it marks the directory complete
    print(f"wrote {out_dir}: {meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens "
          f"in {len(meta['shards'])} shard(s)")
    return meta


if __name__ == "__main__":
    prepare(**{k: v for k, v in configure(globals()).items() if k in config_keys})
