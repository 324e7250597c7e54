"""
Where each token reads from (sample.py --attention_map): the share of its attention that goes to each
long-term memory snapshot, to the read slots (the short-term memory) and to the tokens of its own segment.

In streaming (stream.Stream) a token's keys are exactly [ LTM: one snapshot of M keys per segment it
keeps, oldest first | R: the M read slots | the segment's tokens so far ], so summing the token's
attention weights over these spans accounts for every key. The weights are recomputed only while
recording, by a forward hook on each attention layer: the model's forward keeps its fused kernel.
"""
import csv
import math
from contextlib import contextmanager

import torch

from stream import Stream


def attention_weights(attn, x, past=None, mask=None, is_causal=False):
    """The weights (B, nh, T, P+T) that attn (a CausalSelfAttention) gives its new rows x, as its forward
    computes them inside scaled_dot_product_attention."""
    B, T, C = x.size()
    q, k, _ = attn.c_attn(x).split(C, dim=2)
    q, k = (t.view(B, T, attn.n_head, C // attn.n_head).transpose(1, 2) for t in (q, k))  # (B, nh, T, hs)
    if past is not None:
        k = torch.cat((past[0], k), dim=2)  # (B, nh, P+T, hs)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, nh, T, P+T)
    if is_causal:  # set only without past: T keys
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    if mask is not None:  # boolean: who may attend; float (with an LTM): added to the logits
        att = att.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else att + mask.to(att.dtype)
    return att.softmax(dim=-1)


@contextmanager
def recording(model):
    """Inside, every attention layer also appends its weights (B, nh, rows, keys) per call: one list per layer."""
    records = [[] for _ in model.transformer.h]
    hooks = [block.attn.register_forward_hook(
        lambda attn, args, out, rec=rec: rec.append(attention_weights(attn, *args)))
        for block, rec in zip(model.transformer.h, records)]
    try:
        yield records
    finally:
        for hook in hooks:
            hook.remove()


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

    def __init__(self, model, batch_size, mem=None, ltm_size=None):
        if model.config.mem_len == 0:
            raise ValueError("a plain GPT (mem_len=0) has no memory: its tokens read only tokens")
        super().__init__(model, batch_size, mem, ltm_size)
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


def shares_table(stream, decode, layers="all"):
    """The first sequence's shares, averaged over heads, by layer (layers="all") or over layers ("mean"): a dict
    of tokens, their segments, columns (each snapshot by the segment it came from, R, the tokens), layer names
    and values (layer, token, column), nan where a token's LTM did not hold that snapshot."""
    segs = sorted({s for _, _, token_segs, _ in stream.rows for s in token_segs})
    columns = [f"LTM: segment {s}" for s in segs] + ["read slots (STM)", "segment tokens"]
    n_layer = stream.cfg.n_layer
    values = torch.full((n_layer, len(stream.rows), len(columns)), math.nan)
    for t, (_, _, token_segs, share) in enumerate(stream.rows):
        values[:, t, [segs.index(s) for s in token_segs] + [len(segs), len(segs) + 1]] = share[0].mean(dim=1)
    names = [f"layer {i}" for i in range(n_layer)]
    if layers == "mean":
        values, names = values.mean(dim=0, keepdim=True), ["mean over layers"]
    return dict(tokens=[decode([ids[0].item()]) for ids, _, _, _ in stream.rows],
                segments=[seg for _, seg, _, _ in stream.rows], columns=columns, layers=names, values=values)


def write_csv(path, tab):
    """One row per token and layer; a blank where the token's LTM did not hold the column's snapshot."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "token", "segment", "layer", *tab["columns"]])
        for layer, values in zip(tab["layers"], tab["values"]):
            for t, (token, seg) in enumerate(zip(tab["tokens"], tab["segments"])):
                w.writerow([t, token, seg, layer, *("" if math.isnan(v) else f"{v:.6f}" for v in values[t].tolist())])


def plot(path, tab):
    """A PNG: one panel per layer, a row per token (its segment: token), a column per source. ImportError
    without matplotlib (optional)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n_tok, n_col, n_panel = len(tab["tokens"]), len(tab["columns"]), len(tab["layers"])
    fig, axes = plt.subplots(1, n_panel, squeeze=False, figsize=(2 + 0.5 * n_col * n_panel, 2.5 + 0.22 * n_tok))
    for i, (ax, name, values) in enumerate(zip(axes[0], tab["layers"], tab["values"])):
        im = ax.imshow(values.numpy(), vmin=0, vmax=1, aspect="auto")  # nan (snapshot not held): blank
        ax.set_xticks(range(n_col), tab["columns"], rotation=90)
        ax.set_yticks(range(n_tok), [f"{s}: {t!r}" for s, t in zip(tab["segments"], tab["tokens"])] if i == 0 else [])
        ax.set_title(name)
        for t in range(1, n_tok):
            if tab["segments"][t] != tab["segments"][t - 1]:  # a segment boundary: the memory was written
                ax.axhline(t - 0.5, color="white", linewidth=1)
    axes[0][0].set_ylabel("segment: token")
    fig.colorbar(im, ax=axes[0].tolist(), label="share of the token's attention (mean over heads)")
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit("lab/attention_map.py is a library (sample.py's --attention_map): run python sample.py "
                     "--out_dir=... --attention_map=map.png")
