"""
Streaming inference: a state that reads tokens as they come and does not grow with their number.

memoGPT keeps its memory and a KV cache of the current segment, [ LTM | R | tokens so far ]: at most
K*M + M + S keys per layer. When the segment is full, the W rows run once against that cache, the
memory is updated (new STM, a new LTM snapshot) and the cache restarts. The plain GPT keeps an
ordinary KV cache that slides by half a window past block_size (the kept half is recomputed).
Every step goes through GPT.segment_step, as training does, so streaming equals the batched forward.
"""
import torch
from torch.nn import functional as F


class Stream:

    @torch.no_grad()
    def __init__(self, model, batch_size, mem=None, ltm_size=None):
        self.model, self.cfg, self.ltm_size = model, model.config, ltm_size
        self.mem = None
        self.cache = None    # per layer (2, B, nh, n, hs): the keys/values new rows attend to
        self.pos = 0         # tokens in the current segment (memoGPT) / window (plain GPT)
        # their ids: W starts from them (memoGPT); recomputed when the window slides (plain)
        self.tokens = None
        if self.cfg.mem_len > 0:
            self.mem = model.empty_memory(batch_size) if mem is None else mem
            self._begin_segment()

    def nbytes(self):
        """Bytes of state carried from token to token (memory + cache + the segment's ids)."""
        cache = sum(t.numel() * t.element_size() for t in self.cache or [])
        tokens = 0 if self.tokens is None else self.tokens.numel() * self.tokens.element_size()
        return cache + tokens + (self.mem.nbytes() if self.mem is not None else 0)

    def _step(self, tok_emb, add_read=False, write_segment=None):
        """Embedded tokens (maybe none), R or W through segment_step; the cache keeps their
        keys/values."""
        x, kvs, self.mem = self.model.segment_step(tok_emb, self.mem, self.cache, add_read,
                                                   write_segment, self.ltm_size)
        new = [torch.stack(kv) for kv in kvs]
        self.cache = (new if self.cache is None
                      else [torch.cat((c, n), dim=3) for c, n in zip(self.cache, new)])
        self.pos += tok_emb.size(1)
        return x

    def _nothing(self):
        return self.mem.stm[:, :0]  # (B, 0, C): a step of memory rows alone

    def _begin_segment(self):
        """A segment's cache starts as the LTM, then the read slots (they see the LTM and each
        other)."""
        ltm = self.mem.ltm_kv()
        self.cache, self.pos, self.tokens = (None if ltm is None else list(ltm)), 0, None
        self._step(self._nothing(), add_read=True)

    @torch.no_grad()
    def feed(self, idx):
        """Read idx (B, t); returns the logits (B, t, vocab) at its positions."""
        memo = self.cfg.mem_len > 0
        limit = self.cfg.seg_len if memo else self.cfg.block_size
        out = []
        while idx.size(1) > 0:
            if not memo and self.pos == limit:  # plain GPT: slide the window by half
                keep = self.tokens[:, limit // 2:]
                self.cache, self.pos = None, 0
                self._step(self.model.embed(keep))
                self.tokens = keep
            n = min(limit - self.pos, idx.size(1))
            x = self._step(self.model.embed(idx[:, :n], self.pos))
            out.append(self.model.lm_head(self.model.transformer.ln_f(x)))
            self.tokens = (idx[:, :n] if self.tokens is None
                           else torch.cat((self.tokens, idx[:, :n]), dim=1))
            idx = idx[:, n:]
            # the segment is full: W writes the memory, the next one begins
            if memo and self.pos == limit:
                self._step(self._nothing(), write_segment=self.model.embed(self.tokens))
                self._begin_segment()
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, vocab_size=None):
        """Read idx, then yield (B, 1) new tokens one at a time. top_k=1 is greedy. vocab_size:
        draw only ids below it, the tokenizer's (train.py pads the model's vocabulary to a
        multiple of 64)."""
        logits = self.feed(idx)[:, -1, :vocab_size]
        for _ in range(max_new_tokens):
            logits = logits / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            yield idx_next
            logits = self.feed(idx_next)[:, -1, :vocab_size]
