"""
Where each token reads from (sample.py --attention_map): the share of its attention that goes to each
long-term memory snapshot, to the read slots (the short-term memory) and to the tokens of its own segment.

In streaming (model.Stream) a token's keys are exactly [ LTM: one snapshot of M keys per segment it
keeps, oldest first | R: the M read slots | the segment's tokens so far ], so summing the token's
attention weights over these spans accounts for every key. The weights are computed only while
recording (CausalSelfAttention.record): the normal forward keeps its fast attention kernel.
"""
from contextlib import contextmanager

import torch

from model import Stream


@contextmanager
def recording(model):
    """Inside, every attention layer also appends its weights (B, nh, rows, keys) per call: one list per layer."""
    attns = [block.attn for block in model.transformer.h]
    for attn in attns:
        attn.record = []
    try:
        yield [attn.record for attn in attns]
    finally:
        for attn in attns:
            attn.record = None


def shares(weights, n_snapshots, mem_len):
    """weights (..., keys) over [LTM | R | tokens so far] -> (..., n_snapshots + 2): the share of each
    snapshot (oldest first), of the read slots R, and of the tokens."""
    n_ltm = n_snapshots * mem_len
    ltm, read, toks = weights.split([n_ltm, mem_len, weights.size(-1) - n_ltm - mem_len], dim=-1)
    by_snapshot = ltm.unflatten(-1, (n_snapshots, mem_len)).sum(-1)
    return torch.cat((by_snapshot, read.sum(-1, keepdim=True), toks.sum(-1, keepdim=True)), dim=-1)


class MapStream(Stream):
    """A memoGPT Stream that also keeps, for every token it reads, where its attention went. self.rows, one per
    token: (its id (B,), its segment, the segments of the LTM snapshots it saw, shares (B, n_layer, nh, K + 2))."""

    def __init__(self, model, batch_size, mem=None, ltm=None):
        if model.config.mem_len == 0:
            raise ValueError("a plain GPT (mem_len=0) has no memory: its tokens read only tokens")
        super().__init__(model, batch_size, mem, ltm)
        self.rows = []

    @torch.no_grad()
    def feed(self, idx):
        out = []
        for i in range(idx.size(1)):  # a token at a time: its own step is then feed's first (a full segment's follow)
            seg, segs = self.mem.n_seg, list(self.mem.segs)  # taken before: a full segment pushes a snapshot
            with recording(self.model) as records:
                out.append(super().feed(idx[:, i:i + 1]))
            weights = torch.stack([r[0][:, :, -1] for r in records], dim=1)  # the token's row: (B, n_layer, nh, keys)
            self.rows.append((idx[:, i], seg, segs, shares(weights.float(), len(segs), self.cfg.mem_len)))
        return torch.cat(out, dim=1)
