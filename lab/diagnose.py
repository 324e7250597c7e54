"""
What a recall checkpoint's memory holds, and where the answer's gradient goes (why a seed fails):

    python -m lab.diagnose --ckpt=probe_out/s1/ckpt.pt

 - read-out: a linear classifier (multinomial logistic regression) fit on half the val samples and tested on
   the other half, from the STM after each segment to the fact's value (chance 1/n_values), from all slots
   and from each slot alone. A fact the STM holds but the model does not answer is a reading failure; a
   fact it does not hold is a writing (or carrying) failure.
 - gates: each slot's keep at each segment's write, sigmoid(mem_keep + mem_gate([new, stm])), the mean over
   samples (it depends on what is written), and each layer's LTM age slopes per head.
 - gradient: on samples asked at distance >= ltm + 1 (beyond the LTM's reach), the norm of the answer
   loss's gradient with respect to the STM after each segment before the question.
Writes out_dir/diagnose.json.
"""
import json
import os

import numpy as np
import torch
from torch.nn import functional as F

import recall
from common import write_atomic
from configurator import at_least, check, configure, seed_ok, writable_dir
from lab.eval_ckpt import load

ckpt = ""
out_dir = ""             # "" = beside the checkpoint
samples = 2000           # val samples: half fit the read-out, half test it
seed = 1337
config, _ = configure(globals())
check(config, {"ckpt": lambda v: bool(v) or "which checkpoint? --ckpt=probe_out/s1/ckpt.pt",
               "samples": at_least(2), "seed": seed_ok})
out_dir = out_dir or os.path.dirname(ckpt) or "."
check(config | dict(out_dir=out_dir), {"out_dir": writable_dir("output directory")})
torch.manual_seed(seed)
try:
    model, ck, meta, val = load(ckpt, "cpu")
except (OSError, ValueError) as e:
    raise SystemExit(str(e)) from None
cfg = model.config
if meta["tokenizer"] != "recall" or cfg.mem_len == 0:
    raise SystemExit(f"{ckpt}: python -m lab.diagnose reads memoGPT checkpoints trained on a recall set")
L, S, n_seg = meta["sample_len"], meta["seg_len"], meta["n_seg"]
n = min(samples, len(val[0]) // L)
rows = np.asarray(val[0][:n * L], dtype=np.int64).reshape(n, L)
x, y = (torch.from_numpy(a) for a in recall.sample_xy(rows, meta))
value0 = recall.first_ids(meta["settings"])[1]
fact = torch.from_numpy(rows[:, 1] - value0)  # the value of the one fact ("k v" opens segment 0)

# the memory after each segment, and each slot's keep at each segment's write: the gate's content term is read
# where the model computes it (mem_gate's output, (B, M, 1)), one write per segment
stms, keeps = [], []
hook = model.mem_gate.register_forward_hook(
    lambda m, i, out: keeps.append(torch.sigmoid(model.mem_keep + out.squeeze(-1)).mean(0).tolist()))
with torch.no_grad():
    mem = None
    for k in range(n_seg):
        _, _, mem = model(x[:, k * S:(k + 1) * S], mem=mem)
        stms.append(mem.stm)
hook.remove()
keep = [[keeps[k][j] for k in range(n_seg)] for j in range(cfg.mem_len)]  # per slot, per segment
keep_bias = torch.sigmoid(model.mem_keep).tolist()  # the keep where the content term is zero


def readout(feats, labels, n_fit):
    """Test accuracy of a multinomial logistic regression fit on the first n_fit rows."""
    feats = (feats - feats[:n_fit].mean(0)) / (feats[:n_fit].std(0) + 1e-6)
    w = torch.zeros(feats.size(1), int(labels.max()) + 1, requires_grad=True)
    b = torch.zeros(w.size(1), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(feats[:n_fit] @ w + b, labels[:n_fit]) + 1e-3 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return ((feats[n_fit:] @ w + b).argmax(1) == labels[n_fit:]).float().mean().item()


n_fit = n // 2
read_all = [readout(s.flatten(1), fact, n_fit) for s in stms]
read_slot = [[readout(s[:, j], fact, n_fit) for s in stms] for j in range(cfg.mem_len)]

# the answer's gradient, on samples asked beyond the LTM
asked = (y != -1)
dist = (asked.float().argmax(1) + 1) // S
far = (dist > cfg.ltm).nonzero().flatten()[:256]
grads = {}
if len(far):
    xf, yf, df = x[far], y[far], dist[far]
    mem, stm_by_seg, logits_all = None, [], []
    for k in range(n_seg):
        logits, _, mem = model(xf[:, k * S:(k + 1) * S], mem=mem)
        mem.stm.retain_grad()
        stm_by_seg.append(mem.stm)
        logits_all.append(logits)
    logits = torch.cat(logits_all, 1)
    loss = F.cross_entropy(logits.flatten(0, 1), yf.flatten(), ignore_index=-1, reduction="sum")
    loss.backward()
    # per sample d: gradient norm w.r.t. the STM after segment k < d (k = 0: the fact's write)
    for d in sorted(set(df.tolist())):
        sel = df == d
        grads[d] = [stm_by_seg[k].grad[sel].norm(dim=(1, 2)).mean().item() for k in range(d)]

result = dict(ckpt=ckpt, n_samples=n, chance=1 / meta["settings"]["n_values"], readout_all_slots=read_all,
              readout_by_slot=read_slot, keep_by_slot_and_segment=keep, keep_bias=keep_bias,
              gate_norm=model.mem_gate.weight.norm().item(), ltm_age=model.ltm_age.tolist(),
              answer_grad_norm_by_stm_segment=grads)
print(f"{ckpt}: linear read-out of the fact's value from the STM after segment k (test accuracy, chance "
      f"{result['chance']:.3f})")
print("| from | " + " | ".join(f"seg {k}" for k in range(n_seg)) + " |\n|---|" + "---|" * n_seg)
print("| all slots | " + " | ".join(f"{a:.3f}" for a in read_all) + " |")
for j, r in enumerate(read_slot):
    print(f"| slot {j} | " + " | ".join(f"{a:.3f}" for a in r) + " |")
print(f"\neach slot's keep at the write of segment k (mean over samples; where the content term is zero, the keep is "
      f"sigmoid(mem_keep); the content term's weight norm is {result['gate_norm']:.3f})")
print("| slot | " + " | ".join(f"seg {k}" for k in range(n_seg)) + " | sigmoid(mem_keep) |\n|---|"
      + "---|" * (n_seg + 1))
for j, r in enumerate(keep):
    print(f"| slot {j} | " + " | ".join(f"{a:.3f}" for a in r) + f" | {keep_bias[j]:.3f} |")
print("LTM age slopes per layer (heads):", [[round(v, 2) for v in layer] for layer in result["ltm_age"]])
print("answer's gradient norm w.r.t. the STM after segment k, by distance of the question:")
for d, g in grads.items():
    print(f"  d={d}: " + " ".join(f"{v:.2e}" for v in g))
os.makedirs(out_dir, exist_ok=True)
write_atomic(os.path.join(out_dir, "diagnose.json"), lambda f: json.dump(result, f, indent=1))
