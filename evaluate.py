"""
What is measured on samples read as in training (training.read_samples): val loss by segment index
(memory carried or reset), recall accuracy by distance. Used by train.py and lab/eval_ckpt.py.
"""
import numpy as np
import torch
from torch.nn import functional as F

import recall
from training import read_samples


@torch.no_grad()
def segment_loss_sums(model, x, y, seg_len, carry=True, ltm_size=None):
    """Per segment index: (sum of token losses, number of targets), both float tensors (n_seg,).
    carry=False: every segment read alone, from an empty memory."""
    logits, _ = read_samples(model, x, None, seg_len, carry, ltm_size=ltm_size)
    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-1, reduction="none")
    valid = (y.flatten() != -1).float()
    n_seg = x.size(1) // seg_len
    return (loss.view(-1, n_seg, seg_len).sum((0, 2)).cpu(),
            valid.view(-1, n_seg, seg_len).sum((0, 2)).cpu())


@torch.no_grad()
def val_losses(model, batches, seg_len, with_reset, ctx, ltm_size=None):
    """The val loss over batches [(x, y), ...], and by segment index (None where a segment has no target);
    with_reset: also with every segment read alone (the memory reset before it), and the gain, reset minus carried:
    what the memory (or a plain GPT's longer window) carries, on the same batches. ctx: autocast."""
    carries = (True, False) if with_reset else (True,)
    sums, counts = torch.zeros(len(carries), batches[0][0].size(1) // seg_len), 0
    for x, y in batches:
        for i, carry in enumerate(carries):
            with ctx:
                loss_sums, counts_now = segment_loss_sums(model, x, y, seg_len, carry, ltm_size=ltm_size)
            sums[i] += loss_sums
        counts += counts_now

    def by_segment(sums):
        return [round(v, 4) if c else None for v, c in zip((sums / counts).tolist(), counts)]

    out = {"val_loss": (sums[0].sum() / counts.sum()).item(), "val_loss_by_segment": by_segment(sums[0])}
    if with_reset:
        out["val_loss_by_segment_reset"] = by_segment(sums[1])
        out["memory_gain_by_segment"] = by_segment(sums[1] - sums[0])
    return out


@torch.no_grad()
def recall_accuracy(model, data, meta, n_samples, batch_size, device, ltm_size=None):
    """Exact-answer accuracy (greedy, over the whole vocabulary) by distance in segments from the facts
    (segment 0) to the question, on the first n_samples whole samples of data (recall tokens), every
    answer hidden from the input (recall.xy)."""
    L, S = meta["sample_len"], meta["seg_len"]
    n_samples = min(n_samples, len(data) // L)
    if n_samples == 0:
        raise ValueError(f"recall data holds no whole sample of {L} tokens")
    hits, counts = torch.zeros(meta["n_seg"]), torch.zeros(meta["n_seg"])
    for start in range(0, n_samples, batch_size):
        n = min(batch_size, n_samples - start)
        rows = np.asarray(data[start * L:(start + n) * L], dtype=np.int64).reshape(n, L)
        x, y = recall.sample_xy(rows, meta)
        y = torch.from_numpy(y)
        logits, _ = read_samples(model, torch.from_numpy(x).to(device), None, S, ltm_size=ltm_size)
        asked = y != -1
        right = (logits[asked.to(device)].argmax(-1).cpu() == y[asked]).float()
        distance = (asked.nonzero()[:, 1] + 1) // S  # the answer's segment
        hits.index_add_(0, distance, right)
        counts.index_add_(0, distance, torch.ones_like(right))
    return {d: (hits[d] / counts[d]).item() for d in range(meta["n_seg"]) if counts[d] > 0}
