"""
Prepare a dataset as uint16 token shards for train.py.

    python prepare.py                                        # OpenWebText, GPT-2 BPE
    python prepare.py --dataset=fineweb                      # FineWeb-edu sample-10BT, streamed
    python prepare.py --dataset=text --input='books/*.txt'   # your own files, one file = one document
    python prepare.py --dataset=stdlib --tokenizer=bytes     # this Python's standard library, offline, as bytes
    python prepare.py --dataset=recall                       # synthetic long-range recall, offline, seconds
    python prepare.py --dataset=recall --name=recall_long --n_seg=32   # a second set, beside data/recall/

Output: data/<dataset>/ (data/<name>/ with --name): train_000.bin, ..., val_000.bin, ... and meta.json,
written last: a directory is complete iff it holds meta.json. A set is built in a directory beside it
(data/.<name>.new-PID) and moved in only when complete: --force=True keeps the old set until the new one
is whole (an unreachable source leaves it as it was), and replaces only its own files (the old meta.json
and the shards it lists: other files in the directory stay). A crash during the swap leaves the old set
whole beside it (data/.<name>.old-PID): the next run puts it back, and says so. One prepare.py at a time
per set (data/<name>/LOCK). meta.json's fingerprint, a digest of every shard, lets train.py's resume
tell the set it was trained on from a set prepared again. Read a shard with
np.memmap(path, dtype=np.uint16, mode="r"); every document ends with the end-of-text token meta["eot"].
Train and val are split by document.

Text sets are GPT-2's BPE (--tokenizer=gpt2, vocab 50257, eot 50256) or bytes (--tokenizer=bytes): ids 0..255
are the UTF-8 bytes, and end-of-text, which needs an id of its own, is 256 (vocab_size 257, still uint16
shards). The tokenizers are in tokenizer.py, the recall task in recall.py.
"""
import collections
import difflib
import errno
import functools
import glob
import json
import math
import multiprocessing
import os
import pathlib
import re
import shutil
import sysconfig

import numpy as np
from tqdm import tqdm

import recall
from common import cannot_write, check_disk, lock_dir, pid_alive, unlock_dir, write_atomic
from configurator import at_least, check, configure, override, seed_ok, writable_dir
from data import DATASETS, ShardWriter, fingerprint
from tokenizer import BYTES_EOT, EOT_TEXT, gpt2_encoding

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


def known_dataset(v):
    close = difflib.get_close_matches(v, DATASETS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return v in DATASETS or f"unknown dataset {v!r} ({hint}choose one of {', '.join(DATASETS)})"


def resolve(overrides):
    """The defaults above with overrides applied; a mistyped key or value, or one out of its range, stops with one
    line."""
    cfg = override({k: globals()[k] for k in config_keys}, overrides, "prepare")
    check(cfg, {"dataset": known_dataset})
    cfg["val_fraction"] = cfg["val_fraction"] or (0.05 if cfg["dataset"] == "stdlib" else 0.0005)
    if cfg["dataset"] == "stdlib" and not cfg["input"]:
        cfg["input"] = sysconfig.get_paths()["stdlib"]  # in the settings: another Python's stdlib is another set
    check(cfg, {
        "data_dir": writable_dir("data directory"),
        "name": lambda v: (not v or v == os.path.basename(v) and not v.startswith(".")
                           or "a plain directory name, made under data_dir (no path, not hidden), e.g. recall_long"),
        **{k: at_least(1) for k in ("shard_size", "num_proc", "seg_len", "n_seg", "n_facts", "n_keys", "n_values",
                                    "n_filler", "n_train", "n_val")},
        "max_docs": at_least(0, " (0 = all documents)"),
        "val_fraction": lambda v: 0 <= v < 1 or "must be in [0, 1): the share of documents that go to val",
        "bad_files": lambda v: v in ("skip", "stop") or "choose skip or stop",
        "tokenizer": lambda v: (v in ("gpt2", "bytes") and (cfg["dataset"] != "recall" or v == "gpt2")
                                or "choose gpt2 or bytes, for a text set (recall has its own)"),
        "seed": seed_ok,
    })
    return cfg


def check_uint16(vocab_size, name):
    if vocab_size > 2**16:
        raise SystemExit(f"the {name} vocabulary has {vocab_size} tokens: ids do not fit uint16 shards "
                         "(65536 at most)")


# -----------------------------------------------------------------------------
# writing a set beside the old one, then swapping it in: data/.<name>.new-PID is the set being built,
# data/.<name>.old-PID the old set's files during the swap

SHARD = re.compile(r"(train|val)_\d{3,}\.bin")  # the names ShardWriter gives


def shards_of(set_dir):
    """The shard names a set's meta.json lists (names prepare.py gives only: a hand-edited one touches nothing)."""
    try:
        with open(os.path.join(set_dir, "meta.json"), encoding="utf-8") as f:
            return [n for n in json.load(f)["shards"] if isinstance(n, str) and SHARD.fullmatch(n)]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def swap_in(build_dir, out_dir):
    """Move the complete set in build_dir into out_dir. Only prepare.py's files there are touched: the old
    meta.json and the shards it lists (and files the new set's names would replace) go aside first, into
    data/.<name>.old-PID, meta.json first; then the new shards, the new meta.json last. A crash at any moment
    leaves the new set whole under the name, or the old one beside it: settle_swap (here at once, or the next
    run) puts it back."""
    old = os.path.join(os.path.dirname(build_dir), f".{os.path.basename(out_dir)}.old-{os.getpid()}")
    os.makedirs(old)
    new = sorted(os.listdir(build_dir))
    aside = ["meta.json"] + sorted(set(shards_of(out_dir) + new) - {"meta.json"})  # meta.json first: then no set
    try:
        for name in aside:
            if os.path.lexists(os.path.join(out_dir, name)):
                os.replace(os.path.join(out_dir, name), os.path.join(old, name))
        for name in [n for n in new if n != "meta.json"] + ["meta.json"]:
            os.replace(os.path.join(build_dir, name), os.path.join(out_dir, name))
    except BaseException:  # an error or Ctrl-C mid-swap: the old set goes back now
        settle_swap(old, out_dir)
        raise
    shutil.rmtree(old)


def settle_swap(old, out_dir):
    """Finish a swap that stopped (old: its data/.<name>.old-PID). With a meta.json under the name, that set is
    whole and the old files go; else the new files moved in go and the old ones move back, meta.json last.
    Returns what it did."""
    if os.path.exists(os.path.join(out_dir, "meta.json")):
        shutil.rmtree(old)
        return f"{out_dir} holds a whole set, removed {old}"
    head, _, pid = old.rpartition(".old-")
    build = f"{head}.new-{pid}"
    saved = set(os.listdir(old))
    for name in shards_of(build):  # moved in from the build before the stop, over nothing of the old set's
        if name not in saved and not os.path.exists(os.path.join(build, name)) \
                and os.path.exists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))
    for name in sorted(saved - {"meta.json"}) + ["meta.json"] * ("meta.json" in saved):
        os.replace(os.path.join(old, name), os.path.join(out_dir, name))
    os.rmdir(old)
    return f"put the old set back into {out_dir}"


def settle_left_over(data_dir, name, out_dir):
    """What a prepare.py of this set that died left (its PID is gone): a half-done swap, settled and said so,
    then its build directory."""
    for kind in ("old", "new"):  # the swaps first: settle_swap reads the build's meta.json
        for entry in sorted(os.listdir(data_dir)):
            found = re.fullmatch(rf"\.{re.escape(name)}\.{kind}-(\d+)", entry)
            if not found or (int(found[1]) != os.getpid() and pid_alive(int(found[1]))):  # ours: a reused PID
                continue
            path = os.path.join(data_dir, entry)
            if kind == "old":
                print(f"a prepare.py (process {found[1]}) stopped while swapping in a new set: "
                      f"{settle_swap(path, out_dir)}")
            else:
                shutil.rmtree(path, ignore_errors=True)


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
            nul = " (it holds NUL bytes)" if _is_utf8(bad[0], nul_ok=True) else ""
            raise SystemExit(f"{bad[0]} is not UTF-8 text{nul}: remove it from --input, or pass --bad_files=skip")
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


def _is_utf8(path, nul_ok=False):
    """UTF-8 text without NUL bytes (sample.py refuses those: a NUL is no text)."""
    try:
        with open(path, encoding="utf-8") as f:
            while piece := f.read(1 << 24):  # in pieces: a file can be larger than memory
                if not nul_ok and "\x00" in piece:
                    return False
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
    """Each text's tokens, ended by end-of-text, and whether it holds text (more than a byte order mark).
    Texts are kept as they are, empty ones too: the corpus, and so its split, stays what it is."""
    has_text = [bool(t.removeprefix("\ufeff")) for t in texts]
    if tokenizer == "bytes":
        arrays = [np.append(np.frombuffer(t.encode(), dtype=np.uint8), BYTES_EOT).astype(np.uint16) for t in texts]
    else:
        enc = gpt2_encoding()  # per process, loaded from the cache
        arrays = [np.array(ids + [enc.eot_token], dtype=np.uint16) for ids in enc.encode_ordinary_batch(texts)]
    return list(zip(arrays, has_text))


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


def tokenize_text(cfg, out_dir, sources, final_dir=None):
    """Shards into out_dir (the build directory); final_dir: where the set will be, for messages."""
    final_dir = final_dir or out_dir
    writers = {split: ShardWriter(out_dir, split, cfg["shard_size"]) for split in ("train", "val")}
    docs = {"train": 0, "val": 0}
    f, i, empty, texts = cfg["val_fraction"], 0, 0, {"train": 0, "val": 0}
    ds, source = open_source(cfg, sources, final_dir)
    try:
        if cfg["max_docs"]:
            ds = ds.take(cfg["max_docs"])
        total = cfg["max_docs"] or (None if cfg["streaming"] else len(ds))
        batches = (batch["text"] for batch in ds.iter(batch_size=256))
        with tqdm(total=total, unit="docs", desc=f"tokenizing {cfg['dataset']}") as bar:
            encode = functools.partial(_encode_batch, cfg["tokenizer"])
            for encoded in _ordered_map(encode, batches, cfg["num_proc"]):
                parts = {"train": [], "val": []}
                for ids, has_text in encoded:
                    empty += not has_text
                    split = "val" if math.ceil((i + 1) * f) > math.ceil(i * f) else "train"
                    texts[split] += has_text
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
        raise SystemExit(_offline(_where(cfg, source), e, final_dir)) from None
    if i - empty < 2 or not docs["train"]:  # empty documents stay (the corpus as it is), but are no set alone
        raise SystemExit(f"{cfg['dataset']} gave {i} document(s), {i - empty} with text: need at least 2, val takes "
                         "the first")
    for split in ("train", "val"):  # a split of empty documents alone is no set either
        if not texts[split]:
            raise SystemExit(f"the {split} split's {docs[split]} document(s) of {cfg['dataset']} are all empty (val "
                             f"takes a {f:g} share of the documents, the first too): give more documents with text, "
                             "or another --val_fraction")
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

def check_recall(cfg):
    """Stop with one line on recall settings that make no valid sample or do not fit the shards."""
    recall.check(cfg)
    if cfg["shard_size"] < cfg["n_seg"] * cfg["seg_len"]:
        raise SystemExit(f"shard_size {cfg['shard_size']} is below one recall sample "
                         f"({cfg['n_seg'] * cfg['seg_len']} tokens)")
    check_uint16(len(recall.vocab(cfg)), "recall")


def make_recall(cfg, out_dir):
    S, n_seg = cfg["seg_len"], cfg["n_seg"]
    sample_len, itos = n_seg * S, recall.vocab(cfg)
    shard_size = cfg["shard_size"] // sample_len * sample_len  # samples never straddle shards
    shards, chunk = {}, 16384  # samples made at a time, to bound memory
    for split, n, split_seed in (("train", cfg["n_train"], cfg["seed"]), ("val", cfg["n_val"], cfg["seed"] + 1)):
        rng, writer = np.random.default_rng(split_seed), ShardWriter(out_dir, split, shard_size)
        for start in tqdm(range(0, n, chunk), desc=f"writing recall {split}", unit="chunk"):
            writer.write(recall.samples(min(chunk, n - start), cfg, rng))
        shards.update(writer.close())
    val0 = recall.first_ids(cfg)[1]
    return dict(tokenizer="recall", vocab_size=len(itos), eot=0, itos=itos, sample_len=sample_len, seg_len=S,
                n_seg=n_seg, n_facts=cfg["n_facts"], question=recall.QUESTION, n_values=cfg["n_values"],
                value_ids=list(range(val0, val0 + cfg["n_values"])),
                train_samples=cfg["n_train"], val_samples=cfg["n_val"], shards=shards)


# -----------------------------------------------------------------------------

def prepare(**overrides):
    """Prepare data_dir/name (see the settings above); returns its meta.json as a dict. One prepare.py at a time
    per set: data_dir/name/LOCK names it, a second stops with one line."""
    cfg = resolve(overrides)
    out_dir = os.path.join(cfg["data_dir"], cfg["name"] or cfg["dataset"])
    sources = check_recall(cfg) if cfg["dataset"] == "recall" else sources_of(cfg)  # errors before anything is removed
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise SystemExit(f"{out_dir} is a file, not a dataset directory: move it, or choose another --name")
    made = not os.path.exists(out_dir)
    lock = lock_dir(out_dir, "prepare.py")
    try:
        settle_left_over(os.path.dirname(os.path.abspath(out_dir)), os.path.basename(out_dir), out_dir)
        return prepare_locked(cfg, out_dir, sources)
    finally:
        unlock_dir(lock)
        if made and not os.listdir(out_dir):  # made for the lock alone: nothing came of it
            os.rmdir(out_dir)


def prepare_locked(cfg, out_dir, sources):
    meta_path = os.path.join(out_dir, "meta.json")
    is_recall = cfg["dataset"] == "recall"
    settings = {k: cfg[k] for k in (RECALL_SETTINGS if is_recall else TEXT_SETTINGS)}
    settings["dataset"] = cfg["dataset"]
    if os.path.exists(meta_path) and not cfg["force"]:
        try:
            with open(meta_path, encoding="utf-8") as fp:
                meta = json.load(fp)
        except (OSError, ValueError) as e:
            raise SystemExit(f"{meta_path} is not readable JSON ({type(e).__name__}): --force=True redoes the set")
        if not isinstance(meta, dict):
            raise SystemExit(f"{meta_path} is not a meta.json prepare.py wrote: --force=True redoes the set")
        if meta.get("settings") == settings and {"train_tokens", "val_tokens"} <= meta.keys():
            print(f"{out_dir} is already prepared ({meta['train_tokens']:,} train and {meta['val_tokens']:,} val "
                  "tokens); --force=True redoes it")
            return meta
        changed = [k for k in settings if meta.get("settings", {}).get(k) != settings[k]]
        raise SystemExit(f"{out_dir} was prepared with other settings ({', '.join(changed)}); "
                         "--force=True redoes it")
    if cfg["tokenizer"] == "gpt2" and not is_recall:
        gpt2_encoding()  # fetched if need be, before anything is removed
    # built beside the old set, which stays as it was until the new one is complete
    parent = os.path.dirname(os.path.abspath(out_dir))
    build = os.path.join(parent, f".{os.path.basename(out_dir)}.new-{os.getpid()}")
    need = 2 * (cfg["n_train"] + cfg["n_val"]) * cfg["n_seg"] * cfg["seg_len"] if is_recall else 0  # text: unknown
    check_disk(parent, need, f"the {cfg['dataset']} set")
    shutil.rmtree(build, ignore_errors=True)
    os.makedirs(build)
    try:
        meta = make_recall(cfg, build) if is_recall else tokenize_text(cfg, build, sources, out_dir)
        meta["dtype"] = "uint16"
        for split in ("train", "val"):
            meta[f"{split}_tokens"] = sum(n for name, n in meta["shards"].items() if name.startswith(split))
        meta["settings"] = settings
        meta["fingerprint"] = fingerprint(build, meta["shards"])
        write_atomic(os.path.join(build, "meta.json"), lambda f: json.dump(meta, f, indent=1))
        swap_in(build, out_dir)  # the new meta.json last: it marks the directory complete
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        built = sum(os.path.getsize(os.path.join(build, n)) for n in os.listdir(build)) if os.path.isdir(build) else 0
        raise SystemExit(f"{cannot_write(build, e, need, more_than=built)}; {out_dir} is as it was") from None
    finally:
        shutil.rmtree(build, ignore_errors=True)  # never leave shards that look usable
    print(f"wrote {out_dir}: {meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens "
          f"in {len(meta['shards'])} shard(s)")
    return meta


if __name__ == "__main__":
    prepare(**{k: v for k, v in configure(globals())[0].items() if k in config_keys})
