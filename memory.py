"""
The memory of memoGPT as a value: the short-term memory (STM) and the long-term snapshots (LTM),
inspected and edited (Memory; saved and loaded by checkpoint.py); the attention mask that lets a
segment's rows [ R | tokens | W ] read and write it (segment_mask); and the LTM's ages (key_ages).
How the model reads and writes it is GPT.segment_step in model.py.
"""
import functools
from dataclasses import dataclass, field

import torch


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
        """The memory after one more segment: new STM, snapshot appended, the oldest dropped past ltm_size."""
        keep = slice(-ltm_size, None) if ltm_size > 0 else slice(0, 0)
        return Memory(stm, (self.snapshots + [snapshot])[keep], self.n_seg + 1, (self.segs + [self.n_seg])[keep])

    def detach(self):
        """Cut the autograd graph here (truncated BPTT): later losses stop reaching back."""
        return Memory(self.stm.detach(), [s.detach() for s in self.snapshots], self.n_seg, self.segs)

    # --- controllable memory: inspect and edit (checkpoint.py saves and loads it) ---

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
