"""
The prepared datasets: meta.json, the uint16 token shards (written by prepare.py through ShardWriter,
checked when opened), and batches of samples.

A sample is n_seg segments of seg_len tokens: a random window of a text set, or one whole sample
of the recall set (with answers_only, its targets are the answers alone: recall.xy).
"""
import glob
import hashlib
import json
import os

import numpy as np

import recall

DATASETS = ("openwebtext", "fineweb", "text", "stdlib", "recall")
# what must match between the data a checkpoint was trained on and the data it is read with
SAME_DATA = ("tokenizer", "vocab_size", "eot", "itos", "sample_len")


def remake(data_dir, meta=None):
    """The command that remakes data_dir (its kind from meta.json when readable)."""
    name = os.path.basename(os.path.normpath(data_dir))
    kind = ((meta or {}).get("settings") or {}).get("dataset", name) if isinstance(meta, dict) else name
    kind = kind if kind in DATASETS else "KIND"
    return f"python prepare.py --dataset={kind}" + (f" --name={name}" if name != kind else "") + " --force=True"


def bad_data(data_dir, what, meta=None):
    return ValueError(f"{what}: remake the set with {remake(data_dir, meta)} (and its other settings)")


def load_meta(data_dir):
    path = os.path.join(data_dir, "meta.json")
    if not os.path.isfile(path):
        name = os.path.basename(os.path.normpath(data_dir))
        parent = os.path.dirname(os.path.normpath(data_dir))
        left = glob.glob(os.path.join(glob.escape(parent), f".{glob.escape(name)}.old-*"))
        if left:  # a prepare.py stopped mid-swap: the old set is whole beside
            raise FileNotFoundError(f"no dataset at {data_dir}: a prepare.py stopped while swapping in a new set, the "
                                    f"old one is in {left[0]}; run prepare.py for {name} again: it puts the old set "
                                    "back")
        if name not in DATASETS:
            raise FileNotFoundError(f"no dataset at {data_dir}: make it with python prepare.py --dataset=KIND "
                                    f"--name={name}, KIND one of {', '.join(DATASETS)}")
        raise FileNotFoundError(f"no dataset at {data_dir}: make it with python prepare.py --dataset={name}")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise bad_data(data_dir, f"{path} is not readable JSON ({type(e).__name__}: empty or damaged?)") from None
    need = {"tokenizer": str, "vocab_size": int, "eot": int, "shards": dict}
    if isinstance(meta, dict) and meta.get("tokenizer") == "recall":
        need.update(itos=list, sample_len=int, seg_len=int, n_seg=int, question=int, value_ids=list)
    wrong = [k for k, t in need.items() if not isinstance(meta, dict) or type(meta.get(k)) is not t]
    if wrong:
        raise bad_data(data_dir, f"{path} is not a meta.json prepare.py wrote ({', '.join(wrong)} missing or of the "
                                 "wrong type)", meta)
    if not all(isinstance(n, int) and n >= 0 for n in meta["shards"].values()) or not 0 < meta["vocab_size"] <= 2**16:
        raise bad_data(data_dir, f"{path} is damaged (shard token counts or vocab_size out of range)", meta)
    return meta


def open_split(data_dir, meta, split, check_ids=False):
    """The split's shards as uint16 memmaps, in name order; each checked against meta.json's token count (a
    missing, truncated or grown shard stops with one line, ValueError). check_ids: and every token id against the
    vocabulary, one pass (a small split: val; sample_batch checks the batches it draws)."""
    names = sorted(n for n in meta["shards"] if n.startswith(split + "_"))
    if not names:
        raise bad_data(data_dir, f"{data_dir}/meta.json lists no {split} shards", meta)
    shards = []
    for n in names:
        path = os.path.join(data_dir, n)
        want = 2 * meta["shards"][n]
        size = os.path.getsize(path) if os.path.isfile(path) else None
        if size != want:
            got = "is missing" if size is None else f"holds {size} bytes"
            raise bad_data(data_dir, f"{path} {got}, meta.json says {want // 2} tokens ({want} bytes): truncated or "
                                     "damaged", meta)
        if want == 0:
            continue  # np.memmap cannot map an empty file
        shards.append(np.memmap(path, dtype=np.uint16, mode="r"))
        if check_ids and shards[-1].max() >= meta["vocab_size"]:
            raise bad_data(data_dir, beyond_vocab(path, shards[-1].max(), meta["vocab_size"]), meta)
    if not shards:
        raise bad_data(data_dir, f"the {split} shards of {data_dir} are empty", meta)
    return shards


def differs(trained, meta):
    """What differs between the data a checkpoint was trained on (its meta) and meta: [] when they are the same
    set. The tokenizer and vocabulary, and the set itself: its fingerprint (a digest of every shard, written by
    prepare.py), or where either lacks one (made before fingerprints) its shards' token counts and settings."""
    keys = [k for k in SAME_DATA if trained.get(k) != meta.get(k)]
    if "fingerprint" in trained and "fingerprint" in meta:
        keys += ["fingerprint"] * (trained.get("fingerprint") != meta.get("fingerprint"))
    else:
        keys += [k for k in ("shards", "settings") if trained.get(k) != meta.get(k)]
    return keys


def check_room(shards, length, aligned, where):
    """Stop (ValueError) unless the shards hold at least one sample of length + 1 tokens (aligned: a whole one)."""
    room = sum(len(s) // aligned for s in shards) if aligned else max(len(s) for s in shards) - length
    if room < 1:
        total = sum(len(s) for s in shards)
        raise ValueError(f"{where} holds {total} tokens" + (f" in shards of at most {max(len(s) for s in shards)}"
                                                              if len(shards) > 1 else "")
                         + f", not one sample of {length + (0 if aligned else 1)} tokens: prepare more data, or train "
                           "with a shorter seg_len or n_seg")


def beyond_vocab(path, top, vocab_size):
    return f"{path} holds token id {top}, beyond the vocabulary of {vocab_size} in meta.json: damaged, or another set's"


def sample_batch(shards, rng, n, length, aligned, vocab_size=None):
    """n rows of length + 1 tokens (int64). aligned: whole samples starting at multiples of `aligned`
    (the recall set; the row's last token is then -1, nothing to predict); else random windows. vocab_size: a
    token id beyond it stops with one line (ValueError) naming its shard, not an IndexError in the model."""
    if aligned:
        counts = [len(s) // aligned for s in shards]
    else:  # a shard shorter than a sample gives none
        counts = [max(0, len(s) - length) for s in shards]
    ends = np.cumsum(counts)
    picks = rng.integers(ends[-1], size=n)
    rows = np.full((n, length + 1), -1, dtype=np.int64)
    for r, p in enumerate(picks):
        i = int(np.searchsorted(ends, p, side="right"))
        j = int(p - (ends[i] - counts[i]))
        if aligned:
            rows[r, :length] = shards[i][j * aligned:j * aligned + length]
        else:
            rows[r] = shards[i][j:j + length + 1]
        if vocab_size and rows[r].max() >= vocab_size:
            path = shards[i].filename
            raise bad_data(os.path.dirname(path), beyond_vocab(path, rows[r].max(), vocab_size))
    return rows


def inputs_targets(rows, meta, answers_only=False):
    """Rows (n, L + 1) -> inputs, targets (n, L): the next token everywhere, or the recall answers only."""
    return recall.xy(rows, meta) if answers_only else (rows[:, :-1], rows[:, 1:])


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


def fingerprint(out_dir, shards):
    """A digest of every shard (name and bytes), in name order: the same set gives the same fingerprint."""
    digest = hashlib.sha256()
    for name in sorted(shards):
        digest.update(f"{name}\n".encode())
        with open(os.path.join(out_dir, name), "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()
