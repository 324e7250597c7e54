"""
memoGPT: GPT-2 with implicit memory (the memory state and mask live in memory.py).

mem_len == 0 is plain GPT-2 (HF parameter names, so pretrained weights map 1:1).
mem_len > 0 reads the input segment by segment; each segment is laid out as
[ R read slots | tokens | W write slots ] (see memory.py), the write slots' final states
are gated into the next short-term memory (STM), and their keys/values go into a FIFO
long-term memory (LTM) that later segments attend to. Memory rows use their own FFN (dual FFN).
Training, evaluation and streaming (Stream, at the end) all go through GPT.segment_step.
"""
import inspect
import json
import math
import os
import pickle
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from memory import Memory, key_ages, segment_mask


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
        self.record = None  # a list: each call also appends its attention weights (for a picture only)

    def forward(self, x, past=None, mask=None, is_causal=False):
        """x (B, T, C) new rows; past (2, B, nh, P, hs) cached keys/values they also attend to.
        Returns the output and the new rows' (k, v), for caches and LTM snapshots."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        kv = (k, v)
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)  # (B, nh, P+T, hs)
        # flash attention where allowed (is_causal, no mask); a boolean mask, or a float one (the LTM's age bias)
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)  # under autocast q is bf16/fp16: the bias must match it
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        if self.record is not None:  # a picture was asked for (attention_map.py): the weights themselves
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, nh, T, P+T)
            if is_causal:  # set only without past: T keys
                mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            if mask is not None:  # boolean: who may attend; float (with an LTM): added to the logits
                att = att.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else att + mask
            self.record.append(att.softmax(dim=-1))
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
        if config.mem_len > 0 and config.dual_ffn:
            # dual FFN: memory rows get their own feed-forward network (and its LayerNorm)
            self.ln_2_mem = LayerNorm(config.n_embd, bias=config.bias)
            self.mlp_mem = MLP(config)

    def forward(self, x, past=None, mask=None, is_causal=False, mem_rows=(0, 0)):
        """mem_rows = (n_read, n_write): the first n_read and last n_write rows of x are memory slots."""
        a, kv = self.attn(self.ln_1(x), past, mask, is_causal)
        x = x + a
        n_read, n_write = mem_rows
        if not hasattr(self, "mlp_mem") or n_read + n_write == 0:
            return x + self.mlp(self.ln_2(x)), kv
        T = x.size(1)
        tok = x[:, n_read:T - n_write]
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

    def __post_init__(self):  # a shape that cannot be built is refused here, not by an error deep inside
        if min(self.n_layer, self.n_head, self.n_embd, self.block_size, self.vocab_size) < 1:
            raise ValueError("n_layer, n_head, n_embd, block_size and vocab_size must be >= 1")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head} (each head gets "
                             "n_embd / n_head dimensions): change n_embd or n_head")
        if self.mem_len < 0 or self.ltm < 0:
            raise ValueError(f"mem_len (memory slots) and ltm (snapshots) must be >= 0 (0 = none), got "
                             f"mem_len={self.mem_len}, ltm={self.ltm}")
        if self.mem_len > 0 and not 0 < self.seg_len <= self.block_size:
            raise ValueError(f"need 0 < seg_len <= block_size, got seg_len={self.seg_len}, block_size={self.block_size}")


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
            self.mem_init = nn.Parameter(torch.zeros(M, C))   # m_0, the STM before anything was read
            self.mem_read = nn.Parameter(torch.zeros(M, C))   # per-slot embedding of R
            self.mem_write = nn.Parameter(torch.zeros(M, C))  # per-slot embedding of W
            # the STM is written as ln_mem(final hidden state of W): normalised, so it stays bounded
            # over any number of segments, and its own LayerNorm leaves ln_f to the LM head
            self.ln_mem = LayerNorm(C, bias=config.bias)
            self.mem_gate = nn.Linear(C, 1, bias=False)  # per slot: keep the STM, or take the new write
            self.mem_keep = nn.Parameter(torch.zeros(M))  # the gate's bias per slot: its timescale (see _init_memory)
            # per layer and head, an attention bias per segment of a snapshot's age (ALiBi-like, learned, from 0):
            # snapshots hold no position, so without it a token cannot tell the last segment from older ones.
            # It is a slope, not a table, so any LTM size still fits the same weights
            self.ltm_age = nn.Parameter(torch.zeros(config.n_layer, config.n_head))
        # GPT-2 starts every weight at std 0.02, right for its 768 dims; we scale that with the width,
        # 0.02 * sqrt(768 / n_embd), so attention logits start with GPT-2's spread at any width. With a
        # flat 0.02 a 128-wide model starts with near-uniform attention: on the 4-fact recall set it then
        # stayed at 0.33 exact answers after 1500 steps even with all facts in its window (1.00 with this
        # init), and its memory slots all read the same blend of the segment
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
        # memory slots enter the blocks beside token embeddings: start them at the same scale
        if self.config.mem_len == 0:
            return
        scale = self.transformer.wte.weight.std().item()
        for p in (self.mem_init, self.mem_read, self.mem_write):
            torch.nn.init.normal_(p, mean=0.0, std=scale)
        self.ln_mem.weight.fill_(scale)
        # chrono init (Tallec & Ollivier, 2018): slot j starts keeping sigmoid(mem_keep[j]) of its STM per segment,
        # a timescale 1 / (1 - keep) from 2 to 32 segments, geometric. With every slot at keep 0.5, what a segment
        # wrote is 0.5^d of the STM d segments on, so is its gradient, and the memory learned to hold the last
        # segment only (stdlib, seeds 1 and 2); slow slots give older segments a path the gradient can follow
        torch.nn.init.zeros_(self.mem_gate.weight)
        timescale = torch.logspace(1, 5, self.config.mem_len, base=2)  # (M,) 2 .. 32 segments
        self.mem_keep.copy_(torch.log(timescale - 1))

    def get_num_params(self, non_embedding=True):
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def empty_memory(self, batch_size):
        """The memory before anything was read: STM = m_0, no LTM snapshots."""
        return Memory(self.mem_init.expand(batch_size, -1, -1), [], 0)

    def segment_step(self, tok_emb, mem=None, past=None, pos=0, read=False, write=False, ltm=None, seg_emb=None):
        """
        The one step every reading goes through: new rows of a segment, through the block stack, against the
        keys/values `past` the segment holds so far. The rows are

            [ R (if read) | tokens at positions pos.. | W (if write) ]

        training reads a whole segment at once (read and write, past = the LTM); streaming reads R when a
        segment begins (past = the LTM), then token chunks, then W when the segment is full (past = the
        cache, seg_emb = the whole segment's token embeddings); the plain GPT reads tokens only. Who attends
        to what is segment_mask (memory.py).
        tok_emb (B, t, C) token embeddings, t >= 0; past: per layer (2, B, nh, P, hs), or None.
        Returns the tokens' hidden states (B, t, C), the new rows' per-layer (k, v), and the memory (after
        write: updated, W's keys/values pushed into the LTM, ltm of them kept, None = config.ltm; else as it was).
        """
        B, t, C = tok_emb.size()
        M = self.config.mem_len
        n_read, n_write = (M if read else 0), (M if write else 0)
        positions = torch.arange(pos, pos + t, dtype=torch.long, device=tok_emb.device)
        tok = tok_emb + self.transformer.wpe(positions)
        rows = [mem.stm + self.mem_read, tok] if read else [tok]
        if write:
            # write slot j starts from the STM, its own embedding, and the mean of the j-th of M equal parts
            # of the segment: every slot begins with a part of its own (a fact and its value, side by side,
            # land in one slot), and attention adds what else it keeps. Started from the STM alone, all
            # slots read the same blend of the segment (cosine 0.85 between slots) and held no key-value pair
            seg = tok if seg_emb is None else seg_emb + self.transformer.wpe(torch.arange(seg_emb.size(1),
                                                                                          device=seg_emb.device))
            rows.append(mem.stm + self.mem_write + F.adaptive_avg_pool1d(seg.transpose(1, 2), M).transpose(1, 2))
        x = self.transformer.drop(torch.cat(rows, dim=1))  # (B, n_read + t + n_write, C)
        n_past = 0 if past is None else past[0].size(-2)
        if n_read == n_write == 0 and (n_past == 0 or t == 1):
            mask, is_causal = None, n_past == 0  # tokens alone, causal or one new token: no mask, the fast kernel
        else:
            mask, is_causal = segment_mask(n_past, n_read, t, n_write, tok_emb.device), False
        masks = [mask] * len(self.transformer.h)
        if mem is not None and mem.ltm:  # past begins with the LTM: each head adds slope * age to its logits
            age = key_ages(len(mem.ltm), M, n_past + x.size(1), tok_emb.device)  # (n_keys,)
            bias = [slope.view(-1, 1, 1) * age for slope in self.ltm_age]  # (nh, 1, n_keys)
            masks = bias if mask is None else [b.masked_fill(~mask, float("-inf")) for b in bias]  # (nh, n_q, n_keys)
        kvs = []
        for i, block in enumerate(self.transformer.h):
            x, kv = block(x, None if past is None else past[i], masks[i], is_causal, (n_read, n_write))
            kvs.append(kv)
        if write:
            h = x[:, -M:]  # W's final states (B, M, C)
            # each slot keeps its STM or takes what W wrote, by a learned gate (GRU-like): a fact written
            # once survives segments of filler. Both sides are bounded, so is their mix, over any length
            keep = torch.sigmoid(self.mem_gate(h) + self.mem_keep.view(M, 1))  # (B, M, 1)
            stm = keep * mem.stm + (1 - keep) * self.ln_mem(h)
            snapshot = torch.stack([torch.stack((k[:, :, -M:], v[:, :, -M:])) for k, v in kvs])  # W's per layer
            mem = mem.push(stm, snapshot, self.config.ltm if ltm is None else ltm)
        return x[:, n_read:n_read + t], kvs, mem

    def forward(self, idx, targets=None, mem=None, bptt=0, ltm=None, recompute=False, need_mem=True):
        """idx (B, T) -> logits (B, T, vocab), loss (targets -1 = ignore), memory after the last complete segment.
        memoGPT reads idx segment by segment, from mem (None = empty). bptt: gradients reach back through at most
        this many segments (0 = all). ltm: LTM snapshots kept (None = config.ltm; its size adds no parameters).
        recompute: keep only each segment's (plain GPT: the window's) inputs and outputs, and recompute the rest
        in the backward pass: activation memory then grows by those per segment, not by a whole block stack.
        need_mem=False: nothing reads the memory returned (training), so the last segment's W rows, which no
        token sees, are not computed, and mem is None."""
        B, T = idx.size()
        cfg = self.config
        # use_reentrant=False: keyword arguments, a Memory in and out, and the RNG (dropout) replayed alike
        step = partial(checkpoint, self.segment_step, use_reentrant=False) if recompute else self.segment_step
        tok_emb = self.transformer.wte(idx)  # once: one embedding gradient, not one per segment
        if cfg.mem_len == 0:
            if T > cfg.block_size:
                raise ValueError(f"plain GPT reads at most block_size={cfg.block_size} tokens, got {T}")
            x, _, mem = step(tok_emb)
        else:
            mem = self.empty_memory(B) if mem is None else mem
            xs = []
            for s, start in enumerate(range(0, T, cfg.seg_len)):
                if bptt and s > 0 and s % bptt == 0:
                    mem = mem.detach()  # truncated BPTT: a loss reaches back 1..bptt segments
                seg = tok_emb[:, start:start + cfg.seg_len]
                # only complete segments are written: a partial last one leaves the memory as it was
                write = seg.size(1) == cfg.seg_len and (need_mem or start + cfg.seg_len < T)
                x, _, mem = step(seg, mem, mem.ltm_kv(), read=True, write=write, ltm=ltm)
                xs.append(x)
            x = torch.cat(xs, dim=1)
            mem = mem if need_mem else None
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            # the mean over the targets, and 0 (not nan) when there are none: recall samples cut before
            # their questions by the curriculum (the count stays on the device: no sync)
            loss = (F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                                    reduction="sum") / (targets != -1).sum().clamp(min=1))
        return logits, loss, mem

    @classmethod
    def from_pretrained(cls, name_or_dir, **overrides):
        """HF GPT-2 weights from a hub name (gpt2, gpt2-medium, gpt2-large, gpt2-xl) or a local directory
        written by save_pretrained. overrides: dropout and the memory fields (mem_len, ltm, seg_len, ...)."""
        from safetensors.torch import load_file
        path = name_or_dir
        if not os.path.isdir(path):
            from huggingface_hub import snapshot_download
            try:
                path = snapshot_download(name_or_dir, allow_patterns=["config.json", "model.safetensors"])
            except Exception as e:
                raise OSError(f"could not get {name_or_dir} from the HF hub ({type(e).__name__}): "
                              "pass a local directory written by save_pretrained instead") from e
        weights = os.path.join(path, "model.safetensors")
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"{path} has no model.safetensors: save it with transformers' save_pretrained")
        with open(os.path.join(path, "config.json")) as f:
            hf = json.load(f)
        assert hf.get("activation_function", "gelu_new") == "gelu_new"
        args = dict(n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
                    block_size=hf["n_positions"], vocab_size=hf["vocab_size"], bias=True, dropout=0.0)
        args.setdefault("seg_len", args["block_size"])
        args.update(overrides)
        model = cls(GPTConfig(**args))
        sd = model.state_dict()
        # HF stores these four as Conv1D weights, i.e. (in, out): transpose into nn.Linear's (out, in)
        transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        loaded = set()
        for k, v in load_file(weights).items():
            k = k if k.startswith("transformer.") else "transformer." + k
            if k not in sd:
                continue  # lm_head (tied to wte), old attn.bias / masked_bias buffers
            v = v.t() if k.endswith(transposed) else v
            assert sd[k].shape == v.shape, f"{k}: {tuple(v.shape)} in {weights}, {tuple(sd[k].shape)} here"
            sd[k].copy_(v)
            loaded.add(k)
        missing = [k for k in sd if k.startswith("transformer.") and ".mlp_mem." not in k
                   and ".ln_2_mem." not in k and k not in loaded]
        assert not missing, f"{weights} lacks {missing[:4]}"
        if model.config.mem_len > 0:
            if model.config.dual_ffn:  # the memory FFN starts as an exact copy of the pretrained one
                for block in model.transformer.h:
                    block.mlp_mem.load_state_dict(block.mlp.state_dict())
                    block.ln_2_mem.load_state_dict(block.ln_2.state_dict())
            model._init_memory()
        return model

    @classmethod
    def from_checkpoint(cls, path, device="cpu"):
        """A model saved by train.py (out_dir/ckpt.pt). Returns the model and the whole checkpoint dict."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no checkpoint at {path}: train one first, e.g. python train.py config/recall.py")
        try:  # tensors and plain Python values only: unpickling anything else could run the file's code
            ckpt = torch.load(path, map_location=device, weights_only=True)
        except pickle.UnpicklingError:
            raise ValueError(f"{path} was not loaded: it holds more than tensors and plain values (loading those "
                             "could run code in it), or it is damaged; load only checkpoints train.py wrote") from None
        except Exception as e:
            raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: damaged, truncated or "
                             "empty?): train again, or restore it") from None
        if not isinstance(ckpt, dict) or not {"model", "model_args"} <= ckpt.keys():
            raise ValueError(f"{path} is not a checkpoint train.py wrote (no model and model_args in it)")
        model = cls(GPTConfig(**ckpt["model_args"]))
        try:  # torch.compile saves its parameters under an _orig_mod. prefix
            model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
        except RuntimeError:
            raise ValueError(f"{path}: its weights do not fit its model_args (damaged, or written by another "
                             "version of model.py)") from None
        return model.to(device), ckpt

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW; weight decay on matrices and embeddings (dim >= 2), not on biases and LayerNorm gains."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **(dict(fused=True) if fused else {}))

    @torch.no_grad()
    def generate_stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, stream=None, vocab_size=None):
        """Yield (B, 1) new tokens one at a time, reading idx first. top_k=1 is greedy. vocab_size: draw only
        ids below it, the tokenizer's (train.py pads the model's vocabulary up to a multiple of 64)."""
        stream = Stream(self, idx.size(0)) if stream is None else stream
        logits = stream.feed(idx)[:, -1, :vocab_size]
        for _ in range(max_new_tokens):
            logits = logits / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            yield idx_next
            logits = stream.feed(idx_next)[:, -1, :vocab_size]

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, mem=None, ltm=None, vocab_size=None):
        """Streaming generation with constant memory: idx (B, T) -> (B, T + max_new_tokens)."""
        stream = Stream(self, idx.size(0), mem, ltm)
        new = self.generate_stream(idx, max_new_tokens, temperature, top_k, stream, vocab_size)
        return torch.cat([idx, *new], dim=1)



def read_samples(model, x, y, seg_len, carry=True, bptt=0, ltm=None, recompute=False):
    """
    How a batch of samples (B, n_seg * seg_len) is read, in training and in every evaluation: memoGPT
    segment by segment with its memory carried across (bptt, ltm, recompute: as in GPT.forward; the memory
    after the sample is not kept, so its last write is skipped); the plain GPT (mem_len=0) the whole sample
    as one window if it fits its block_size, else each segment as its own window (its context is then the
    segment a token is in, what memoGPT's tokens attend to besides the memory). carry=False: each segment
    alone, from an empty memory, for either. model may be wrapped (DDP, torch.compile): it is called, never
    reached into. Returns logits, loss.
    """
    B, T = x.shape
    cfg = getattr(model, "module", model).config
    if carry and cfg.mem_len > 0:
        logits, loss, _ = model(x, y, bptt=bptt, ltm=ltm, recompute=recompute, need_mem=False)
        return logits, loss
    window = T if carry and T <= cfg.block_size else seg_len
    logits, loss, _ = model(x.reshape(-1, window), None if y is None else y.reshape(-1, window),
                            recompute=recompute, need_mem=False)
    return logits.view(B, T, -1), loss


class Stream:
    """
    Streaming inference state. memoGPT: the memory plus a KV cache of the current segment,
    [ LTM | R | tokens so far ], at most K*M + M + S keys, and the segment's token ids (the write
    slots start from them); when the segment is full the W rows run against that cache, the memory
    is updated and the cache restarts. Its size does not grow with the number of tokens. Plain GPT:
    a KV cache that slides by half a window when it reaches block_size (the tokens it keeps are
    recomputed; older ones are forgotten).
    Every step goes through GPT.segment_step, as training does.
    """

    @torch.no_grad()
    def __init__(self, model, batch_size, mem=None, ltm=None):
        self.model, self.cfg, self.ltm = model, model.config, ltm
        self.mem = None
        self.cache = None    # per layer (2, B, nh, n, hs): the keys/values new rows attend to
        self.pos = 0         # tokens in the current segment (memoGPT) / window (plain GPT)
        self.tokens = None   # their ids: for the write slots (memoGPT), to recompute when it slides (plain GPT)
        if self.cfg.mem_len > 0:
            self.mem = model.empty_memory(batch_size) if mem is None else mem
            self._begin_segment()

    def nbytes(self):
        """Bytes of state carried from token to token (memory + cache)."""
        cache = sum(t.numel() * t.element_size() for t in self.cache or [])
        tokens = 0 if self.tokens is None else self.tokens.numel() * self.tokens.element_size()
        return cache + tokens + (self.mem.nbytes() if self.mem is not None else 0)

    def _step(self, tok_emb, read=False, write=False):
        """Tokens (maybe none) and the read or write slots through segment_step; the cache keeps their keys."""
        seg_emb = self.model.transformer.wte(self.tokens) if write else None
        x, kvs, self.mem = self.model.segment_step(tok_emb, self.mem, self.cache, self.pos, read, write, self.ltm,
                                                   seg_emb)
        new = [torch.stack(kv) for kv in kvs]
        self.cache = new if self.cache is None else [torch.cat((c, n), dim=3) for c, n in zip(self.cache, new)]
        self.pos += tok_emb.size(1)
        return x

    def _begin_segment(self):
        """A segment's cache starts as the LTM, then the read slots (they see the LTM and each other)."""
        ltm = self.mem.ltm_kv()
        self.cache, self.pos, self.tokens = (None if ltm is None else list(ltm)), 0, None
        self._step(self.mem.stm[:, :0], read=True)  # no tokens yet: (B, 0, C)

    @torch.no_grad()
    def feed(self, idx):
        """Read idx (B, t); returns the logits (B, t, vocab) at its positions."""
        memo, wte = self.cfg.mem_len > 0, self.model.transformer.wte
        limit = self.cfg.seg_len if memo else self.cfg.block_size
        out = []
        while idx.size(1) > 0:
            if not memo and self.pos == limit:  # plain GPT: slide the window by half
                keep = self.tokens[:, limit // 2:]
                self.cache, self.pos = None, 0
                self._step(wte(keep))
                self.tokens = keep
            n = min(limit - self.pos, idx.size(1))
            x = self._step(wte(idx[:, :n]))
            out.append(self.model.lm_head(self.model.transformer.ln_f(x)))
            self.tokens = idx[:, :n] if self.tokens is None else torch.cat((self.tokens, idx[:, :n]), dim=1)
            idx = idx[:, n:]
            if memo and self.pos == limit:  # the segment is full: W writes the memory, the next one begins
                self._step(self.mem.stm[:, :0], write=True)
                self._begin_segment()
        return torch.cat(out, dim=1)
