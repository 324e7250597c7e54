"""
Where a routed write (pool="route") sends the facts of segment 0: the slots they go to, how many share a slot, and
what the null and the other slots take. Reads a model lab.capacity kept (--keep_models=True):

    python -m lab.route_diag --model=bench_out/models/M8_scattered_2.pt --layout=scattered --n_facts=8

A fact's pair is its value token with its key before it (the pair the write matches by content). Per sample: the
slot (or the null) that takes the largest share of each fact pair, the number of distinct such slots (n_facts when
every fact has a slot of its own, at most M), the facts the fullest slot holds, the facts the null takes; per kind
of pair (fact, key, filler), the mean share of its top slot and of the null; per slot, the weight it takes and how
much of it is facts.
"""
import os

import numpy as np
import torch

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
tok = torch.from_numpy(recall.samples(samples, cfg, np.random.default_rng(seed)).astype(np.int64))[:, :S]  # (B, S)
with torch.no_grad():
    _, shares = net.route(net.embed(tok), net.empty_memory(samples).stm + net.mem_write)  # (B, S, M + 1)
key0, val0, fil0 = recall.first_ids(cfg)
is_key, is_val, is_fil = (tok >= key0) & (tok < val0), (tok >= val0) & (tok < fil0), tok >= fil0
top = shares.argmax(-1)  # (B, S): M = the null
kept = [top[b][is_val[b] & (top[b] < M)] for b in range(samples)]  # each sample's facts' slots, the null's left out
distinct = [len(set(k.tolist())) for k in kept]
fullest = [np.bincount(k.numpy(), minlength=M).max() for k in kept]
print(f"{model}: {n_facts} facts {layout}, {samples} samples, {net.config.route_alloc} rounds; mem_shift "
      f"{net.mem_shift.mean():.3f}, null logit {net.route_null.item():.3f}")
print(f"distinct top slots of the {n_facts} fact pairs: mean {np.mean(distinct):.2f} (min {min(distinct)}); "
      f"facts in the fullest slot: mean {np.mean(fullest):.2f}; facts the null takes most of: mean "
      f"{n_facts - np.mean([len(k) for k in kept]):.2f}")
for name, m in (("fact pairs (value after key)", is_val), ("pairs ending on a key", is_key), ("filler", is_fil)):
    s = shares[m]
    if len(s):  # no filler when facts fill the segment
        print(f"{name}: top slot share {s[:, :M].max(-1).values.mean():.3f}, null share {s[:, M].mean():.3f}")
w, wf = shares[..., :M].sum(1).mean(0), (shares[..., :M] * is_val[..., None]).sum(1).mean(0)  # (M,)
print("per slot, pairs' worth taken:", " ".join(f"{v:.1f}" for v in w.tolist()))
print("per slot, of it fact pairs:  ", " ".join(f"{v:.1f}" for v in wf.tolist()))
