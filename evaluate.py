"""
Evaluation and data loading shared by train.py and bench.py.

A sample is n_seg segments of seg_len tokens. memoGPT reads it whole, segment by segment,
starting from an empty memory. The plain GPT (mem_len=0) reads it as independent windows
of seg_len tokens: its context is the segment it is in, the same tokens memoGPT attends to
in a segment, but without a memory of earlier segments.
"""
import json
import os

import numpy as np
import torch
from torch.nn import functional as F


def load_meta(data_dir):
    path = os.path.join(data_dir, "meta.json")
    if not os.path.isfile(path):
        name = os.path.basename(os.path.normpath(data_dir))
        raise SystemExit(f"no dataset at {data_dir}: make it with python prepare.py --dataset={name}")
    with open(path) as f:
        return json.load(f)


def open_split(data_dir, meta, split):
    """The split's shards as uint16 memmaps, in name order."""
    names = sorted(n for n in meta["shards"] if n.startswith(split + "_"))
    if not names:
        raise SystemExit(f"{data_dir} has no {split} shards: remake it with prepare.py")
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


def answer_targets(rows, meta):
    """Targets that are -1 everywhere but at the recall answers, the tokens two after each "?" marker
    (each target sits at the prediction made just before its answer)."""
    y = np.full((rows.shape[0], rows.shape[1] - 1), -1, dtype=np.int64)
    asked = rows[:, :-2] == meta["question"]  # "?" at t: its key at t+1, the answer at t+2
    y[:, 1:][asked] = rows[:, 2:][asked]
    return y


def forward(model, x, y, seg_len):
    """Logits (B, T, vocab) and loss of a batch of samples, read as described at the top."""
    if getattr(model, "module", model).config.mem_len > 0:
        logits, loss, _ = model(x, y)
        return logits, loss
    B, T = x.shape
    logits, loss, _ = model(x.reshape(-1, seg_len), None if y is None else y.reshape(-1, seg_len))
    return logits.view(B, T, -1), loss


@torch.no_grad()
def segment_loss_sums(model, x, y, seg_len):
    """Per segment index: (sum of token losses, number of targets), both float tensors (n_seg,)."""
    logits, _ = forward(model, x, None, seg_len)
    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-1, reduction="none")
    valid = (y.flatten() != -1).float()
    n_seg = x.size(1) // seg_len
    return (loss.view(-1, n_seg, seg_len).sum((0, 2)).cpu(),
            valid.view(-1, n_seg, seg_len).sum((0, 2)).cpu())


def per_segment_loss(model, x, y, seg_len):
    """Mean loss by segment index (nan for a segment without targets)."""
    sums, counts = segment_loss_sums(model, x, y, seg_len)
    return (sums / counts).tolist()


@torch.no_grad()
def recall_accuracy(model, data, meta, n_samples, batch_size, device):
    """Exact-answer accuracy (greedy, over the whole vocabulary) by distance in segments from the facts
    (segment 0) to the question, on the first n_samples whole samples of data (the recall set's val tokens)."""
    L, S = meta["sample_len"], meta["seg_len"]
    n_samples = min(n_samples, len(data) // L)
    if n_samples == 0:
        raise SystemExit(f"recall data holds no whole sample of {L} tokens")
    hits, counts = torch.zeros(meta["n_seg"]), torch.zeros(meta["n_seg"])
    for start in range(0, n_samples, batch_size):
        n = min(batch_size, n_samples - start)
        rows = np.asarray(data[start * L:(start + n) * L], dtype=np.int64).reshape(n, L)
        y = torch.from_numpy(answer_targets(rows, meta))  # (n, L-1): the answers, at the predictions before them
        logits, _ = forward(model, torch.from_numpy(rows).to(device), None, S)
        asked = y != -1
        right = (logits[:, :-1][asked.to(device)].argmax(-1).cpu() == y[asked]).float()
        distance = (asked.nonzero()[:, 1] + 1) // S  # the answer's segment
        hits.index_add_(0, distance, right)
        counts.index_add_(0, distance, torch.ones_like(right))
    return {d: (hits[d] / counts[d]).item() for d in range(meta["n_seg"]) if counts[d] > 0}
