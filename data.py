"""
Reading prepared datasets (prepare.py writes them): meta.json, the uint16 token shards, batches.

A sample is n_seg segments of seg_len tokens: a random window of a text set, or one whole sample
of the recall set (with answers_only, its targets are the answers alone: recall.xy).
"""
import json
import os

import numpy as np

import recall

DATASETS = ("openwebtext", "fineweb", "text", "stdlib", "recall")


def load_meta(data_dir):
    path = os.path.join(data_dir, "meta.json")
    if not os.path.isfile(path):
        name = os.path.basename(os.path.normpath(data_dir))
        if name not in DATASETS:
            raise FileNotFoundError(f"no dataset at {data_dir}: make it with python prepare.py --dataset=KIND "
                                    f"--name={name}, KIND one of {', '.join(DATASETS)}")
        raise FileNotFoundError(f"no dataset at {data_dir}: make it with python prepare.py --dataset={name}")
    with open(path) as f:
        return json.load(f)


def open_split(data_dir, meta, split):
    """The split's shards as uint16 memmaps, in name order."""
    names = sorted(n for n in meta["shards"] if n.startswith(split + "_"))
    if not names:
        raise FileNotFoundError(f"{data_dir} has no {split} shards: remake it with prepare.py")
    return [np.memmap(os.path.join(data_dir, n), dtype=np.uint16, mode="r") for n in names]


def sample_batch(shards, rng, n, length, aligned):
    """n rows of length + 1 tokens (int64). aligned: whole samples starting at multiples of `aligned`
    (the recall set; the row's last token is then -1, nothing to predict); else random windows."""
    if aligned:
        counts = [len(s) // aligned for s in shards]
    else:
        counts = [len(s) - length for s in shards]
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
    return rows


def inputs_targets(rows, meta, answers_only=False):
    """Rows (n, L + 1) -> inputs, targets (n, L): the next token everywhere, or the recall answers only."""
    return recall.xy(rows, meta) if answers_only else (rows[:, :-1], rows[:, 1:])
