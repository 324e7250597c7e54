"""
Where a routed write (pool="route") sends the facts of segment 0: the slots they go to, how many share a slot, and
what the null and the other slots take. Reads a model lab.capacity kept (--keep_models=True):

    python -m lab.route_diag --model=bench_out/models/M8_scattered_2.pt --layout=scattered --n_facts=8

A fact's pair is its value token with its key before it (the pair the write matches by content). Per sample: the
slot (or the null) that takes the largest share of each fact pair, the number of distinct such slots (n_facts when
every fact has a slot of its own, at most M), the facts the fullest slot holds, the facts the null takes; per kind
of pair (fact, key, filler), the mean share of its top slot and of the null; per slot, the weight it takes and how
much of it is facts; the answers beyond the LTM by where the fact went (a slot of its own, a shared one, the null)
and by distance. --route_alloc=R reads with R rounds of allocation (they have no weights).
"""
import os

import numpy as np
import torch
from torch.nn import functional as F

import recall
from configurator import at_least, check, configure
from model import GPT, GPTConfig

model = ""               # a kept model: out_dir/models/M{slots}_{layout}_{seed}.pt
layout = "clustered"     # clustered | scattered (restated facts sit as clustered ones in segment 0)
n_facts = 8
samples = 200
seed = 5                 # the held-out samples (capacity scores on 1338 + n_facts)
n_keys, n_values, n_filler = 32, 16, 32  # lab.capacity's (only segment 0 is read)
route_alloc = -1         # rounds of allocation to read with (no weights: any number); -1: as trained
config, _ = configure(globals())
check(config, {"model": lambda v: os.path.isfile(v) or "no such file: give a model lab.capacity kept, "
                                                    "out_dir/models/M{slots}_{layout}_{seed}.pt (--keep_models=True)",
               "n_facts": at_least(1), "samples": at_least(1),
               "layout": lambda v: v in ("clustered", "scattered") or "clustered or scattered",
               "route_alloc": at_least(-1)})

kept = torch.load(model, map_location="cpu", weights_only=True)
net = GPT(GPTConfig(**{**kept["config"], **({"route_alloc": route_alloc} if route_alloc >= 0 else {})}))
net.load_state_dict(kept["model"])
net.eval()
S, M = net.config.seg_len, net.config.mem_len
cfg = dict(seg_len=S, n_seg=8, n_facts=n_facts, n_keys=n_keys, n_values=n_values,
           n_filler=n_filler, layout=layout)
x, y = (torch.from_numpy(a) for a in recall.sample_xy(recall.samples(samples, cfg, np.random.default_rng(seed))))
tok = x[:, :S]  # (B, S): segment 0, the facts
with torch.no_grad():
    _, shares = net.route(net.embed(tok), net.empty_memory(samples).stm + net.mem_write)  # (B, S, M + 1)
    logits = torch.cat([net(x[i:i + 50], y[i:i + 50])[0] for i in range(0, samples, 50)])  # (B, 8 S, vocab)
key0, val0, fil0 = recall.first_ids(cfg)
is_key, is_val, is_fil = (tok >= key0) & (tok < val0), (tok >= val0) & (tok < fil0), tok >= fil0
top = shares.argmax(-1)  # (B, S): M = the null
slot_of = torch.full((samples, fil0), -1)  # (B, vocab below filler): the top slot of each key's fact
prev = F.pad(tok, (1, 0), value=-1)[:, :-1]  # (B, S): the token before
b_, t_ = (is_val & (prev >= key0) & (prev < val0)).nonzero(as_tuple=True)  # a fact: its value after its key
slot_of[b_, prev[b_, t_]] = top[b_, t_]
facts_in = F.one_hot(slot_of.clamp(min=0), M + 1).mul((slot_of >= 0)[..., None]).sum(1)  # (B, M + 1)
facts_in_slots = facts_in[:, :M]  # (B, M): the facts each slot took most of
distinct, fullest = (facts_in_slots > 0).sum(1).float(), facts_in_slots.max(1).values.float()  # (B,)
print(f"{model}: {n_facts} facts {layout}, {samples} samples, {net.config.route_alloc} rounds; mem_shift "
      f"{net.mem_shift.mean():.3f}, null logit {net.route_null.item():.3f}")
print(f"distinct top slots of the {n_facts} fact pairs: mean {distinct.mean():.2f} (min {distinct.min():.0f}); "
      f"facts in the fullest slot: mean {fullest.mean():.2f}; facts the null takes most of: mean "
      f"{facts_in[:, M].float().mean():.2f}")
for name, m in (("fact pairs (value after key)", is_val), ("pairs ending on a key", is_key), ("filler", is_fil)):
    s = shares[m]
    if len(s):  # no filler when facts fill the segment
        print(f"{name}: top slot share {s[:, :M].max(-1).values.mean():.3f}, null share {s[:, M].mean():.3f}")
w, wf = shares[..., :M].sum(1).mean(0), (shares[..., :M] * is_val[..., None]).sum(1).mean(0)  # (M,)
print("per slot, pairs' worth taken:", " ".join(f"{v:.1f}" for v in w.tolist()))
print("per slot, of it fact pairs:  ", " ".join(f"{v:.1f}" for v in wf.tolist()))

# the answers beyond the LTM (only the STM holds them there), by where the write sent the fact: a slot of its own,
# a slot it shares with another fact, the null; and by distance in segments
b_, t_ = ((y != -1) & ((torch.arange(y.size(1)) + 1) // S > net.config.ltm)).nonzero(as_tuple=True)
slot, right = slot_of[b_, x[b_, t_]], logits[b_, t_].argmax(-1) == y[b_, t_]
where = torch.where(slot == M, 2, (facts_in[b_, slot] > 1).long())  # 0 own, 1 shared, 2 the null
print("answers beyond the LTM, by the fact's slot:", ", ".join(
    f"{name} {right[where == i].float().mean():.3f} of {(where == i).sum()}"
    for i, name in enumerate(("own", "shared", "null")) if (where == i).any()))
d = (t_ + 1) // S
print("by distance:", ", ".join(f"{k} {right[d == k].float().mean():.3f}" for k in d.unique().tolist()))
