"""
The memory of memoGPT as a value: the short-term memory (STM) and the long-term snapshots (LTM),
inspected, edited, saved and loaded (Memory); the attention mask that lets a segment's rows
[ R | tokens | W ] read and write it (segment_mask); and the LTM's ages (key_ages). How the model
reads and writes it is GPT.segment_step in model.py.
"""
import functools
import hashlib
import os
from dataclasses import dataclass, field

import torch

from common import write_atomic


@dataclass
class Memory:
    stm: torch.Tensor   # (B, M, C) short-term memory, rewritten after every segment
    # the LTM: up to K, oldest first, each (n_layer, 2, B, nh, M, hs): W's keys, values
    snapshots: list
    n_seg: int = 0      # how many complete segments this memory has read
    # the segment each snapshot was written after (0 = first read)
    segs: list = field(default_factory=list)

    def ltm_kv(self):
        """All snapshots side by side: (n_layer, 2, B, nh, K*M, hs), or None if the LTM is empty."""
        return torch.cat(self.snapshots, dim=4) if self.snapshots else None

    def push(self, stm, snapshot, ltm_size):
        """The memory after one more segment: new STM, snapshot appended, the oldest dropped
        past ltm_size."""
        keep = slice(-ltm_size, None) if ltm_size > 0 else slice(0, 0)
        return Memory(stm, (self.snapshots + [snapshot])[keep], self.n_seg + 1,
                      (self.segs + [self.n_seg])[keep])

    def detach(self):
        """Cut the autograd graph here (truncated BPTT): later losses stop reaching back."""
        return Memory(self.stm.detach(), [s.detach() for s in self.snapshots],
                      self.n_seg, self.segs)

    # --- controllable memory: inspect, edit, save, load ---

    def clear_ltm(self):
        return Memory(self.stm, [], self.n_seg, [])

    def drop_snapshot(self, i):
        """Forget snapshot i (0 = oldest; negative counts from the newest)."""
        snapshots, segs = list(self.snapshots), list(self.segs)
        del snapshots[i], segs[i]
        return Memory(self.stm, snapshots, self.n_seg, segs)

    def nbytes(self):
        return sum(t.numel() * t.element_size() for t in [self.stm] + self.snapshots)

    def describe(self, seg_len):
        lines = [f"memory: {self.n_seg} segments read, STM {tuple(self.stm.shape)} "
                 f"norm {self.stm.norm():.2f}, {len(self.snapshots)} LTM snapshots"]
        for i, (s, snap) in enumerate(zip(self.segs, self.snapshots)):
            lines.append(f"  snapshot {i}: segment {s} "
                         f"(tokens {s * seg_len}..{(s + 1) * seg_len - 1}), "
                         f"key norm {snap[:, 0].norm():.2f}, value norm {snap[:, 1].norm():.2f}")
        return "\n".join(lines)

    def save(self, path, model):
        """Write atomically (temp name, then rename), marked with the model it belongs to."""
        state = {"made_by": model_signature(model), "stm": self.stm.cpu(),
                 "ltm": [s.cpu() for s in self.snapshots], "n_seg": self.n_seg, "segs": self.segs}
        write_atomic(path, lambda f: torch.save(state, f), binary=True)

    @staticmethod
    def load(path, model, device="cpu", ltm_size=None):
        """ltm_size: the LTM size the memory will be read with (None = the model's): any fits
        the same weights."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no memory file at {path}: "
                                    f"make one with sample.py --read=DOC --save_memory={path}")
        try:
            state = torch.load(path, map_location=device, weights_only=True)
            made_by = state["made_by"]
            made_by["shape"], made_by["weights"]
        except Exception:
            raise ValueError(f"{path} is not a memory file: "
                             "make one with sample.py --save_memory") from None
        want = model_signature(model)
        if made_by != want:
            what = "weights" if made_by["shape"] == want["shape"] else f"shape {made_by['shape']}"
            raise ValueError(f"memory file {path} was made by a model with other {what} "
                             f"(this one: {want['shape']}): "
                             "read the document again with this model")
        cfg, stm, snapshots, n_seg, segs = (model.config, state.get("stm"), state.get("ltm"),
                                            state.get("n_seg"), state.get("segs"))
        problem = memory_problem(stm, snapshots, n_seg, segs, cfg)
        if problem:
            raise ValueError(f"memory file {path} is damaged ({problem}): read the document again")
        keep = cfg.ltm if ltm_size is None else ltm_size
        if len(snapshots) > keep:
            raise ValueError(f"memory file {path} holds {len(snapshots)} LTM snapshots, "
                             f"more than the {keep} kept here: load it with ltm={len(snapshots)} "
                             f"(sample.py --ltm={len(snapshots)})")
        return Memory(stm, snapshots, n_seg, segs)


FLOATS = (torch.float32, torch.bfloat16, torch.float16)  # float32, or what autocast computes in
MAX_ABS = 1e4  # a memory the model writes stays far below (the STM is normalised; keys and values are projections)


def memory_problem(stm, snapshots, n_seg, segs, cfg):
    """What is wrong with a loaded memory's parts for a model of config cfg, or None: float tensors
    of its shapes, finite and of a size a model writes; n_seg segments read, and the segment of each
    snapshot, increasing."""
    if not (isinstance(stm, torch.Tensor) and isinstance(snapshots, list)
            and all(isinstance(t, torch.Tensor) for t in snapshots)):
        return "its STM and LTM are not tensors"
    snapshot = (cfg.n_layer, 2, *stm.shape[:1], cfg.n_head, cfg.mem_len, cfg.n_embd // cfg.n_head)
    if (stm.dim() != 3 or stm.shape[1:] != (cfg.mem_len, cfg.n_embd)
            or any(s.shape != snapshot for s in snapshots)):
        return (f"its STM is {tuple(stm.shape)} and it has {len(snapshots)} snapshots, this model "
                f"needs (B, {cfg.mem_len}, {cfg.n_embd}) and snapshots of {snapshot}")
    wrong = sorted({str(t.dtype) for t in [stm] + snapshots if t.dtype not in FLOATS})
    if wrong:
        return f"it holds {', '.join(wrong)}, not float32, bfloat16 or float16"
    if not all(t.isfinite().all() for t in [stm] + snapshots):
        return "it holds NaN or infinite values"
    if any(t.abs().max() > MAX_ABS for t in [stm] + snapshots if t.numel()):
        return f"it holds values beyond {MAX_ABS:g} in magnitude, which attention would turn into NaN"
    if (type(n_seg) is not int or n_seg < 0 or not isinstance(segs, list)
            or not all(type(s) is int for s in segs) or len(segs) != len(snapshots)):
        return f"its segment count {n_seg!r} or snapshot segments {segs!r} do not fit its snapshots"
    if any(not 0 <= s < n_seg for s in segs) or any(a >= b for a, b in zip(segs, segs[1:])):
        return f"snapshot segments {segs} are not increasing segments of the {n_seg} read"
    return None


def model_signature(model):
    """What a memory must match to be read by a model: its shape, and a digest of its memory weights
    (they change with any training, so a memory from another checkpoint is caught too). Not the LTM
    size: its parameters are per layer and head, not per snapshot, so it can be chosen when the
    memory is read (Memory.load)."""
    cfg = model.config
    shape = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd", "mem_len", "seg_len")}
    digest = hashlib.sha1()
    for p in (model.mem_init, model.mem_read, model.mem_write, model.ltm_age):
        digest.update(p.detach().float().cpu().numpy().tobytes())
    return {"shape": shape, "weights": digest.hexdigest()}


@functools.lru_cache(maxsize=64)
def segment_mask(n_past, n_read, n_tok, n_write, device):
    """
    Which keys the new rows of a segment may attend to (True = may), built once per shape.
    New rows are [R | X | W] (any part may be absent); keys are [past | new rows], where past is
    what the segment holds already: the LTM, and in streaming also R and the tokens read so far.
    A whole segment (training), M=2, 3 tokens, 2 LTM keys:

                 LTM   R     X       W
          R  [   1 1   1 1   0 0 0   0 0 ]   read slots: the past only (LTM and the STM)
          R  [   1 1   1 1   0 0 0   0 0 ]
          X  [   1 1   1 1   1 0 0   0 0 ]   tokens: the past, and earlier tokens
          X  [   1 1   1 1   1 1 0   0 0 ]
          X  [   1 1   1 1   1 1 1   0 0 ]
          W  [   1 1   1 1   1 1 1   1 1 ]   write slots: everything, so the segment is
          W  [   1 1   1 1   1 1 1   1 1 ]   written after it is read

    No token sees W, so memory written by a segment is read only by later segments.
    n_write is 0 for a partial (last) segment, which is not written to memory. Streaming asks
    for the same rows in three steps: R (n_read=M), token chunks, then W (n_write=M).
    """
    n_q = n_read + n_tok + n_write
    mask = torch.ones(n_q, n_past + n_q, dtype=torch.bool, device=device)
    mask[:n_read, n_past + n_read:] = False                              # R sees no token, no W
    x_rows, x_keys = slice(n_read, n_read + n_tok), slice(n_past + n_read, n_past + n_read + n_tok)
    mask[x_rows, x_keys] = torch.ones(n_tok, n_tok, dtype=torch.bool, device=device).tril()
    mask[x_rows, n_past + n_read + n_tok:] = False                       # X never sees W
    return mask


@functools.lru_cache(maxsize=64)
def key_ages(n_snapshots, M, n_keys, device):
    """Each key's age in segments (n_keys,) when the keys begin with n_snapshots LTM snapshots
    of M keys, oldest first: snapshot i is n_snapshots - i segments old (the newest 1); the
    segment's own rows are 0."""
    age = torch.zeros(n_keys, device=device)
    age[:n_snapshots * M] = torch.arange(n_snapshots, 0, -1, device=device).repeat_interleave(M)
    return age
