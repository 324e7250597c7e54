"""
memoGPT: GPT-2 with implicit memory. What is different from GPT-2 (mem_len > 0):

- the input is read segment by segment; each segment goes through the blocks as the rows
  [ R read slots | tokens | W write slots ], with the mask drawn in memory.py
- the short-term memory (STM) is M vectors: R and W start from it, and after the segment
  a learned gate per slot keeps it or takes the write (W's final states and the token pairs the
  slot won from the other slots by content), judging both what the slot holds and what it would
  write; every slot starts open, and learns where to hold
- the long-term memory (LTM) is a FIFO of the last K segments' W keys/values per layer:
  later segments attend to them (keys, never queries), told apart by a learned age bias
- memory rows go through their own FFN (dual FFN); tokens through GPT-2's
- positions restart at every segment, so a stream of any length stays in the trained range

mem_len == 0 is plain GPT-2, with HF's parameter names so pretrained weights map 1:1.
Streaming inference (Stream, generate) lives in stream.py; both go through GPT.segment_step.
"""
import inspect
import json
import math
import os
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from memory import Memory, key_ages, segment_mask
from stream import Stream


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's cannot drop it)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x, past=None, mask=None, is_causal=False):
        """x (B, T, C) new rows; past (2, B, nh, P, hs) cached keys/values they also attend to.
        mask: boolean (may attend), or float (added to the logits: the LTM's age bias).
        Returns the output and the new rows' (k, v), for caches and LTM snapshots."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for t in (q, k, v))  # (B, nh, T, hs)
        kv = (k, v)
        if past is not None:
            # (B, nh, P+T, hs)
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)  # under autocast q is bf16/fp16: the bias must match it
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y)), kv


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)
        if config.mem_len > 0 and config.dual_ffn:  # dual FFN: the memory rows' own
            self.ln_2_mem = LayerNorm(config.n_embd, bias=config.bias)
            self.mlp_mem = MLP(config)

    def forward(self, x, past=None, mask=None, is_causal=False, mem_rows=(0, 0)):
        """mem_rows = (n_read, n_write): the first n_read and last n_write rows of x are
        memory slots."""
        a, kv = self.attn(self.ln_1(x), past, mask, is_causal)
        x = x + a
        n_read, n_write = mem_rows
        if not hasattr(self, "mlp_mem") or n_read + n_write == 0:
            return x + self.mlp(self.ln_2(x)), kv
        T = x.size(1)
        tok = x[:, n_read:T - n_write]
        # R and W: (B, n_read + n_write, C)
        mem = torch.cat((x[:, :n_read], x[:, T - n_write:]), dim=1)
        tok = tok + self.mlp(self.ln_2(tok))
        mem = mem + self.mlp_mem(self.ln_2_mem(mem))
        return torch.cat((mem[:, :n_read], tok, mem[:, n_read:]), dim=1), kv


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257, padded up to a multiple of 64 for speed
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True        # bias in Linears and LayerNorms, like GPT-2
    mem_len: int = 0         # M short-term memory slots; 0 = plain GPT, no memory parameters
    ltm: int = 0             # K long-term memory snapshots kept (FIFO); 0 = none
    seg_len: int = 1024      # S tokens per segment (<= block_size); positions restart every segment
    dual_ffn: bool = True    # memory rows through their own FFN; False = shared FFN (ablation)
    pool: str = "route"      # what write slot j starts from: "route", the token pairs it wins from the other slots
                             # by content (issue 31); "parts", the mean of the j-th of M parts (ablation)
    route_null_query: bool = True  # pool=route: the null matched by content too, as a slot is (False: by a logit
                             # alone, the ablation: filler took a slot of its own, RESULTS.md)
    route_alloc: int = 4     # pool=route: rounds in which a slot a pair before took most of is closed to the pairs
                             # after it (one pair per slot, first come; the null the rest); 0 = none, the ablation
    route_alloc_grad: bool = False  # pool=route: backward as if no slot were closed (straight through), so a fact
                             # still pulls a slot a pair before it took

    def __post_init__(self):  # a shape that cannot be built is refused here, not deep inside
        if min(self.n_layer, self.n_head, self.n_embd, self.block_size, self.vocab_size) < 1:
            raise ValueError("n_layer, n_head, n_embd, block_size and vocab_size must be >= 1")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head} "
                             "(each head gets n_embd / n_head dimensions): change n_embd or n_head")
        if self.mem_len < 0 or self.ltm < 0:
            raise ValueError("mem_len (memory slots) and ltm (snapshots) must be >= 0 (0 = none), "
                             f"got mem_len={self.mem_len}, ltm={self.ltm}")
        if self.pool not in ("parts", "route"):
            raise ValueError(f"pool={self.pool!r}: what a write slot starts from, 'parts' or 'route'")
        if self.route_alloc < 0:
            raise ValueError(f"route_alloc={self.route_alloc}: rounds of allocation, >= 0 (0 = none)")
        if self.mem_len > 0 and not 0 < self.seg_len <= self.block_size:
            raise ValueError("need 0 < seg_len <= block_size, "
                             f"got {self.seg_len}, {self.block_size}")


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied embeddings
        if config.mem_len > 0:
            M, C = config.mem_len, config.n_embd
            self.mem_init = nn.Parameter(torch.zeros(M, C))   # m_0, the STM before anything is read
            self.mem_read = nn.Parameter(torch.zeros(M, C))   # per-slot embedding of R
            self.mem_write = nn.Parameter(torch.zeros(M, C))  # per-slot embedding of W
            # the write is the slot's pooled part plus a normalised state, so the STM stays bounded over any number
            # of segments (ln_f is the LM head's)
            self.ln_mem = LayerNorm(C, bias=config.bias)
            self.mem_gate = nn.Linear(2 * C, 1, bias=False)  # the gate's content term: what the slot holds and writes
            self.mem_keep = nn.Parameter(torch.zeros(M))  # the gate's bias per slot
            if config.pool == "route":
                self.mem_shift = nn.Parameter(torch.zeros(C))  # per channel, the share of a pair from its first token
                self.ln_route = LayerNorm(C, bias=config.bias)
                self.mem_route = nn.Linear(2 * C, C, bias=False)  # a pair's key, from its two tokens apart
                self.route_null = nn.Parameter(torch.zeros(()))  # the logit of no slot (a pair kept by none)
                if config.route_null_query:  # the null's query, a slot whose pairs are thrown away
                    self.route_null_q = nn.Parameter(torch.zeros(C))
            # per layer and head, a slope times a snapshot's age: snapshots hold no position, and a slope (not a
            # table) fits any LTM size with the same weights
            self.ltm_age = nn.Parameter(torch.zeros(config.n_layer, config.n_head))
        # GPT-2's std 0.02 is for 768 dims: scaled with the width, attention starts as sharp at any width
        self.init_std = 0.02 * math.sqrt(768 / config.n_embd)
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():  # GPT-2: scaled init of the residual projections
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=self.init_std / math.sqrt(2 * config.n_layer))
        self._init_memory()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=self.init_std)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=self.init_std)

    @torch.no_grad()
    def _init_memory(self):
        if self.config.mem_len == 0 or self.mem_init.is_meta:  # a shape alone (train.py's memory check): no values
            return
        # memory rows enter beside token embeddings
        scale = self.transformer.wte.weight.std().item()
        for p in (self.mem_init, self.mem_read, self.mem_write):
            torch.nn.init.normal_(p, mean=0.0, std=scale)
        self.ln_mem.weight.fill_(scale)
        # every slot starts open, keeping sigmoid(-2) = 0.12 of its STM per segment, whatever it reads: slots that
        # kept most of it (timescales of 8-32 segments) let in too little of a segment for the reading to learn, and
        # some seeds never learned (RESULTS.md, issue 40). The content term, from zero, learns where to hold: a slot
        # can close on filler and open on a fact
        torch.nn.init.zeros_(self.mem_gate.weight)
        self.mem_keep.fill_(-2.0)
        if self.config.pool == "route":  # a pair starts as the mean of its two tokens, and no slot as likely as any
            self.mem_shift.fill_(0.5)
            self.route_null.zero_()
            if self.config.route_null_query:  # the null starts as a slot's query does, beside the token embeddings
                torch.nn.init.normal_(self.route_null_q, mean=0.0, std=scale)

    def route(self, seg, query):
        """pool="route": what each write slot starts from, wherever in the segment seg (B, S, C) a fact sits.
        Each token with the one before is a pair (a key and its value in one vector: RWKV's token shift,
        learned per channel); every pair is shared out among the M slots and a null by a softmax over a
        content match with each slot's query (B, M, C), so the slots compete for it, and a pair may go to
        none: the null, a query too, whose pairs are thrown away. Slot j starts from the mean of the pairs it
        won (B, M, C); also returns the shares (B, S, M + 1), the null's last."""
        # tokens, not places: with the positions in, the slots learned to share out clustered facts by where they
        # sat, two to a slot (RESULTS.md)
        seg = seg - self.transformer.wpe.weight[:seg.size(1)]
        prev = F.pad(seg, (0, 0, 1, 0))[:, :-1]  # the token before; zeros before the first
        pair = seg + self.mem_shift * (prev - seg)  # (B, S, C)
        # the key reads the two tokens apart: a fact "k v" and the seam "v k" between two facts differ
        key = self.mem_route(torch.cat((self.ln_route(seg), self.ln_route(prev)), -1))  # (B, S, C)
        score = key @ self.ln_route(query).transpose(1, 2) / math.sqrt(key.size(-1))  # (B, S, M)
        null = self.route_null.expand(*score.shape[:2], 1)  # (B, S, 1)
        if self.config.route_null_query:
            null = null + key @ self.ln_route(self.route_null_q).unsqueeze(-1) / math.sqrt(key.size(-1))
        shares = free = F.softmax(torch.cat((score, null), -1), dim=-1)  # (B, S, M + 1): the open match
        # a fixed match sends two facts that hash to one slot to that slot: each round, a slot a pair before took
        # most of is closed to the pairs after it, so a later fact takes the next free slot (first come, first
        # served; each round settles one more clash), and when every slot is taken the null
        for _ in range(self.config.route_alloc):
            taken = F.pad(shares[:, :-1, :-1].detach(), (0, 0, 1, 0)).cummax(1).values > 0.5  # (B, S, M): before a pair
            shares = F.softmax(torch.cat((score.masked_fill(taken, float("-inf")), null), -1), dim=-1)
        if self.config.route_alloc_grad and self.config.route_alloc:
            # a closed slot passes no gradient to the pairs after it: one taken by a seam ("f k") before its fact
            # stays taken. Forward as allocated, backward as the open match
            shares = shares.detach() + free - free.detach()
        share = shares[..., :-1]  # (B, S, M): each pair's share of each slot
        return share.transpose(1, 2) @ pair / (share.sum(1).unsqueeze(-1) + 1e-6), shares

    def get_num_params(self, non_embedding=True):
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def empty_memory(self, batch_size):
        """The memory before anything was read: STM = m_0, no LTM snapshots."""
        return Memory(self.mem_init.expand(batch_size, -1, -1), [], 0)

    def embed(self, idx, pos=0):
        """Token ids (B, t) at positions pos.. -> input rows (B, t, C)."""
        positions = torch.arange(pos, pos + idx.size(1), dtype=torch.long, device=idx.device)
        return self.transformer.wte(idx) + self.transformer.wpe(positions)

    def segment_step(self, tok_emb, mem=None, past=None, add_read=False, write_segment=None, ltm_size=None):
        """
        The one step every reading goes through: new rows of a segment, through the block stack,
        against the keys/values `past` the segment holds so far (per layer (2, B, nh, P, hs),
        or None):

            [ R (if add_read) | tok_emb: the new tokens, embedded (B, t, C) | W (if write_segment) ]

        Training reads a whole segment at once (past = the LTM). Streaming reads R when a segment
        begins, then token chunks, then W when it is full (past = its cache). The plain GPT reads
        tokens only. write_segment: the whole segment, embedded (B, S, C), when its W rows are to
        write the memory (they start from the pairs they win); None: no W rows.
        Returns the tokens' hidden states, the new rows' per-layer (k, v), and the memory: after a
        write updated, with ltm_size snapshots kept (None = config.ltm); else as it was.
        """
        M = self.config.mem_len
        n_read, n_write = (M if add_read else 0), (0 if write_segment is None else M)
        rows = [mem.stm + self.mem_read, tok_emb] if add_read else [tok_emb]
        if write_segment is not None:
            # write slot j starts from the STM, its own embedding, and part_j, tokens of its own (not
            # all slots one blend of the segment): the pairs it won by content, wherever they sit. The
            # ablation pool="parts", the mean of the j-th of M parts of the segment, held what sat in
            # its part, two clustered facts or one diluted by filler (RESULTS.md, issue 31)
            if self.config.pool == "parts":
                part = F.adaptive_avg_pool1d(write_segment.transpose(1, 2), M).transpose(1, 2)  # (B, M, C)
            else:
                part, _ = self.route(write_segment, mem.stm + self.mem_write)
            rows.append(mem.stm + self.mem_write + part)
        x = self.transformer.drop(torch.cat(rows, dim=1))  # (B, n_read + t + n_write, C)
        t, n_past = tok_emb.size(1), 0 if past is None else past[0].size(-2)
        if n_read == n_write == 0 and (n_past == 0 or t == 1):
            mask, is_causal = None, n_past == 0  # tokens alone, or one new token: the fast kernel
        else:
            mask, is_causal = segment_mask(n_past, n_read, t, n_write, tok_emb.device), False
        masks = [mask] * len(self.transformer.h)
        # past begins with the LTM: each head adds slope * age
        if mem is not None and mem.snapshots:
            age = key_ages(len(mem.snapshots), M, n_past + x.size(1), tok_emb.device)  # (n_keys,)
            bias = [slope.view(-1, 1, 1) * age for slope in self.ltm_age]  # (nh, 1, n_keys)
            masks = bias if mask is None else [b.masked_fill(~mask, float("-inf")) for b in bias]
        kvs = []
        for block, mask in zip(self.transformer.h, masks):
            x, kv = block(x, None if past is None else past[len(kvs)], mask, is_causal,
                          (n_read, n_write))
            kvs.append(kv)
        if write_segment is not None:
            h = x[:, -M:]  # W's final states (B, M, C)
            # the write is W's normalised final state plus slot j's part, as is: at init the blocks'
            # random features drown the segment in h, and the part keeps a one-hop path from a token
            # to the slot that the reading can learn from
            new = part + self.ln_mem(h)  # (B, M, C)
            # GRU-like: each slot keeps a share of its STM, by its bias, by what it holds and by what it
            # would write, and takes the rest from the write; both sides are bounded, and so is their mix.
            # Reading what it holds lets a slot learn to keep a fact over filler: judged on the write
            # alone, slots rewrote the fact every segment, exact over 7 segments, faded over 100
            seen = torch.cat((new, mem.stm), -1)  # (B, M, 2C)
            keep = torch.sigmoid(self.mem_keep.view(M, 1) + self.mem_gate(seen))  # (B, M, 1)
            stm = keep * mem.stm + (1 - keep) * new
            # W's keys/values, per layer
            snapshot = torch.stack([torch.stack((k[:, :, -M:], v[:, :, -M:])) for k, v in kvs])
            mem = mem.push(stm, snapshot, self.config.ltm if ltm_size is None else ltm_size)
        return x[:, n_read:n_read + t], kvs, mem

    def forward(self, idx, targets=None, mem=None, bptt=0, ltm_size=None, recompute=False,
                need_mem=True):
        """idx (B, T) -> logits (B, T, vocab), loss (targets -1 = ignore), the memory after the last
        complete segment. memoGPT reads idx segment by segment, from mem (None = empty).
        bptt: gradients reach back through at most this many segments (0 = all).
        ltm_size: LTM snapshots kept (None = config.ltm; the LTM's size adds no parameters).
        recompute: keep only each segment's inputs and outputs, recompute the rest in the
        backward pass.
        need_mem=False: nothing reads the memory returned (training), so the last segment's W rows,
        which no token sees, are skipped, and mem is None."""
        B, T = idx.size()
        cfg = self.config
        # use_reentrant=False: keyword arguments, a Memory in and out, and dropout's RNG
        # replayed alike
        step = (partial(checkpoint, self.segment_step, use_reentrant=False) if recompute
                else self.segment_step)
        if cfg.mem_len == 0 and T > cfg.block_size:
            raise ValueError(f"plain GPT reads at most block_size={cfg.block_size} tokens, got {T}")
        tok_emb = self.transformer.wte(idx)  # once: one embedding gradient, not one per segment
        n_pos = min(T, cfg.seg_len) if cfg.mem_len else T
        pos_emb = self.transformer.wpe(torch.arange(n_pos, device=idx.device))  # (n_pos, C)
        if cfg.mem_len == 0:
            x, _, mem = step(tok_emb + pos_emb)
        else:
            mem = self.empty_memory(B) if mem is None else mem
            xs = []
            for s, start in enumerate(range(0, T, cfg.seg_len)):
                if bptt and s > 0 and s % bptt == 0:
                    mem = mem.detach()  # truncated BPTT: a loss reaches back 1..bptt segments
                seg = tok_emb[:, start:start + cfg.seg_len]
                seg = seg + pos_emb[:seg.size(1)]  # positions restart every segment: (B, S, C)
                # only complete segments are written: a partial last one leaves the memory as it was
                write = seg.size(1) == cfg.seg_len and (need_mem or start + cfg.seg_len < T)
                x, _, mem = step(seg, mem, mem.ltm_kv(), add_read=True, write_segment=seg if write else None,
                                 ltm_size=ltm_size)
                xs.append(x)
            x = torch.cat(xs, dim=1)
            mem = mem if need_mem else None
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            # 0, not nan, without targets (recall samples cut before their questions);
            # no device sync
            loss = (F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1),
                                    ignore_index=-1, reduction="sum")
                    / (targets != -1).sum().clamp(min=1))
        return logits, loss, mem

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, mem=None, ltm_size=None,
                 vocab_size=None):
        """Streaming generation with constant memory: idx (B, T) -> (B, T + max_new_tokens).
        top_k=1 is greedy."""
        stream = Stream(self, idx.size(0), mem, ltm_size)
        return torch.cat(
            [idx, *stream.generate(idx, max_new_tokens, temperature, top_k, vocab_size)], dim=1)

    @classmethod
    def from_pretrained(cls, name_or_dir, **overrides):
        """HF GPT-2 weights from a hub name (gpt2, gpt2-medium, ...) or a directory written by
        save_pretrained. overrides: dropout and the memory fields (mem_len, ltm, seg_len, ...)."""
        from safetensors.torch import load_file
        path = name_or_dir
        if not os.path.isdir(path):
            from huggingface_hub import snapshot_download
            try:
                path = snapshot_download(name_or_dir,
                                         allow_patterns=["config.json", "model.safetensors"])
            except Exception as e:
                raise OSError(f"could not get {name_or_dir} from the HF hub ({type(e).__name__}): "
                              "pass a local directory written by save_pretrained instead") from e
        weights = os.path.join(path, "model.safetensors")
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"{path} has no model.safetensors: "
                                    "save it with transformers' save_pretrained")
        try:  # a foreign or damaged directory: one line that names the file
            with open(os.path.join(path, "config.json")) as f:
                hf = json.load(f)
            if hf.get("activation_function", "gelu_new") != "gelu_new":
                raise ValueError(f"activation_function {hf['activation_function']!r}, not GPT-2's gelu_new")
            args = dict(n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
                        block_size=hf["n_positions"], seg_len=hf["n_positions"], vocab_size=hf["vocab_size"],
                        bias=True, dropout=0.0)
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise ValueError(f"{os.path.join(path, 'config.json')} is not a GPT-2 config ({type(e).__name__}: "
                             f"{e}): save the model with transformers' save_pretrained") from None
        args.update(overrides)
        model = cls(GPTConfig(**args))
        sd = model.state_dict()
        # HF stores these four as Conv1D weights, (in, out): transposed into nn.Linear's (out, in)
        transposed = ("attn.c_attn.weight", "attn.c_proj.weight",
                      "mlp.c_fc.weight", "mlp.c_proj.weight")
        loaded = set()
        for k, v in load_file(weights).items():
            k = k if k.startswith("transformer.") else "transformer." + k
            if k not in sd:
                continue  # lm_head (tied to wte), old attn.bias / masked_bias buffers
            v = v.t() if k.endswith(transposed) else v
            if sd[k].shape != v.shape:
                raise ValueError(f"{k}: {tuple(v.shape)} in {weights}, {tuple(sd[k].shape)} in its "
                                 "config.json")
            sd[k].copy_(v)
            loaded.add(k)
        missing = [k for k in sd
                   if k.startswith("transformer.") and "_mem." not in k and k not in loaded]
        if missing:
            raise ValueError(f"{weights} lacks {missing[:4]}: not a GPT-2 model")
        if model.config.mem_len > 0:
            # the memory FFN starts as an exact copy of the pretrained one
            if model.config.dual_ffn:
                for block in model.transformer.h:
                    block.mlp_mem.load_state_dict(block.mlp.state_dict())
                    block.ln_2_mem.load_state_dict(block.ln_2.state_dict())
            model._init_memory()
        return model

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW; weight decay on the blocks' matrices only (attention, FFN, memory FFN), none on the
        embeddings (tokens, positions, memory slots), the memory's gate and age slopes, biases and
        gains. While a task's answers cannot yet be read from memory, the best guess is the same for
        every answer, and decay shrinks what tells the answers' embeddings apart: on the recall set
        they merged in groups, and the run never learned. The gate holds a slot only with a large
        content term, which decay would pull back open (RESULTS.md, issue 40)."""
        matrices = {id(m.weight) for m in self.transformer.h.modules() if isinstance(m, nn.Linear)}
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if id(p) in matrices], "weight_decay": weight_decay},
                  {"params": [p for p in params if id(p) not in matrices], "weight_decay": 0.0}]
        fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas,
                                 **(dict(fused=True) if fused else {}))
