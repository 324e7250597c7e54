"""Branch only: where a routed write (pool=route) sends segment 0's tokens. python lab/route_diag.py CKPT LAYOUT ITERS"""
import math
import sys

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, ".")
import recall
from model import GPT, GPTConfig

path, layout, iters = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = dict(seg_len=32, n_seg=8, n_facts=8, n_keys=32, n_values=16, n_filler=32, layout=layout)
sd = torch.load(path)
model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=128, vocab_size=sd["lm_head.weight"].shape[0], mem_len=8, ltm=2,
                      seg_len=32, block_size=32, pool="route", route_iters=iters,
                      route_balance=int(sys.argv[4]) if len(sys.argv) > 4 else 0))
model.load_state_dict(sd)
model.eval()
rows = torch.from_numpy(recall.samples(200, cfg, np.random.default_rng(5)).astype(np.int64))
key0, val0, fil0 = recall.first_ids(cfg)
with torch.no_grad():
    seg = model.embed(rows[:, :32])
    mem = model.empty_memory(200)
    M, C = 8, 128
    prev = F.pad(seg, (0, 0, 1, 0))[:, :-1]
    pair = seg + model.mem_shift * (prev - seg)
    query = mem.stm + model.mem_write
    key = model.mem_route(torch.cat((model.ln_route(seg), model.ln_route(prev)), -1))
    for _ in range(iters):
        score = key @ model.ln_route(query).transpose(1, 2) / math.sqrt(C)
        score = torch.cat((score, model.route_null.expand(*score.shape[:2], 1)), -1)
        if model.config.route_balance:
            S = 32
            c = min(1.0, S / (M + 1))
            log_col = torch.log(torch.tensor([c] * M + [S - M * c]))
            for _ in range(model.config.route_balance):
                score = score - score.logsumexp(-1, keepdim=True)
                score = score - score.logsumexp(1, keepdim=True) + log_col
            share_all = score.exp()
        else:
            share_all = F.softmax(score, dim=-1)
        share = share_all[..., :M]
        part = share.transpose(1, 2) @ pair / (share.sum(1).unsqueeze(-1) + 1e-6)
        query = query + part
tok = rows[:, :32]
is_val = (tok >= val0) & (tok < fil0)
is_key = (tok >= key0) & (tok < val0)
is_fil = tok >= fil0
print("mem_shift mean %.3f (share of the token before), null logit %.3f" % (model.mem_shift.mean(), model.route_null))
for name, m in (("value tokens (fact pairs)", is_val), ("key tokens", is_key), ("filler", is_fil)):
    s = share_all[m]
    print(f"{name}: null share {s[:, M].mean():.3f}, top slot share {s[:, :M].max(-1).values.mean():.3f}")
top = share_all[..., :M].argmax(-1)  # (B, S)
distinct = [len(set(top[b][is_val[b]].tolist())) for b in range(200)]
print("distinct top slots among the 8 facts' value pairs: mean %.2f" % np.mean(distinct))
# per slot: mass from fact pairs vs everything else
w = share.sum(1)  # (B, M)
wf = (share * is_val[..., None]).sum(1)
print("per slot: total weight", [round(v, 2) for v in w.mean(0).tolist()], "from fact pairs",
      [round(v, 2) for v in wf.mean(0).tolist()])
