"""
Metrics shared by train.py and bench.py: val loss by segment index, recall accuracy by distance.
Samples are read as model.read_samples reads them (memoGPT through its memory, the plain GPT
one segment at a time). And what bench.py and sample.py say of a checkpoint whose memory never
learned to be read.
"""
import sys

import numpy as np
import torch
from torch.nn import functional as F

from data import recall_xy
from model import read_samples


@torch.no_grad()
def segment_loss_sums(model, x, y, seg_len, carry=True, ltm=None):
    """Per segment index: (sum of token losses, number of targets), both float tensors (n_seg,).
    carry=False: every segment read alone, from an empty memory; ltm: LTM snapshots kept (None = trained)."""
    logits, _ = read_samples(model, x, None, seg_len, carry, ltm=ltm)
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
def recall_accuracy(model, data, meta, n_samples, batch_size, device, ltm=None):
    """Exact-answer accuracy (greedy, over the whole vocabulary) by distance in segments from the facts
    (segment 0) to the question, on the first n_samples whole samples of data (the recall set's val tokens),
    each answer hidden from the input (data.recall_xy).
    ltm: LTM snapshots kept (None = as trained)."""
    L, S = meta["sample_len"], meta["seg_len"]
    n_samples = min(n_samples, len(data) // L)
    if n_samples == 0:
        raise ValueError(f"recall data holds no whole sample of {L} tokens")
    hits, counts = torch.zeros(meta["n_seg"]), torch.zeros(meta["n_seg"])
    for start in range(0, n_samples, batch_size):
        n = min(batch_size, n_samples - start)
        rows = np.asarray(data[start * L:(start + n) * L], dtype=np.int64).reshape(n, L)
        x, y = recall_xy(np.pad(rows, ((0, 0), (0, 1)), constant_values=-1), meta)  # answers hidden in x
        y = torch.from_numpy(y)
        logits, _ = read_samples(model, torch.from_numpy(x).to(device), None, S, ltm=ltm)
        asked = y != -1
        right = (logits[asked.to(device)].argmax(-1).cpu() == y[asked]).float()
        distance = (asked.nonzero()[:, 1] + 1) // S  # the answer's segment
        hits.index_add_(0, distance, right)
        counts.index_add_(0, distance, torch.ones_like(right))
    return {d: (hits[d] / counts[d]).item() for d in range(meta["n_seg"]) if counts[d] > 0}


def warn_if_memory_never_read(ckpt, path):
    """One line on stderr for a memoGPT checkpoint trained on one segment per sample (train.py's config n_seg 1,
    no curriculum): its memory was written, never read back."""
    cfg = ckpt.get("config", {})
    if ckpt["model_args"]["mem_len"] and max((*cfg.get("curriculum", ()), cfg.get("n_seg", 2))) == 1:
        print(f"warning: {path} was trained on one segment per sample (n_seg=1, no curriculum): its memory was "
              "never read in training", file=sys.stderr)
