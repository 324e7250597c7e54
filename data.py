"""
Reading prepared datasets (prepare.py writes them): meta.json, the uint16 token shards, batches of samples.

A sample is n_seg segments of seg_len tokens: a random window of a text set, or one whole
sample of the recall set (whose targets are its answers only, with answer_loss: recall_xy).
"""
import json
import os

import numpy as np

from prepare import DATASETS


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


def recall_xy(rows, meta):
    """Inputs and targets (both (n, L)) of recall rows (n, L + 1) as sample_batch gives them. Targets are -1
    everywhere but at the answers, the tokens two after each "?" marker (each target sits at the prediction
    made just before its answer). In the inputs every answer is hidden (end-of-text): a question asked after
    others could otherwise be answered by elimination, from the values already given, without recalling its
    own fact."""
    L = rows.shape[1] - 1
    asked = rows[:, :-2] == meta["question"]  # "?" at t: its key at t+1, the answer at t+2
    y = np.full((rows.shape[0], L), -1, dtype=np.int64)
    y[:, 1:][asked] = rows[:, 2:][asked]
    x = rows[:, :-1].copy()
    x[:, 2:][asked[:, :L - 2]] = meta["eot"]
    return x, y
