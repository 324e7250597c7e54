"""
How many facts the memory holds at once: exact-answer accuracy by number of facts, by memory size, beside a
peer recurrent memory transformer and the in-context ceiling, every row trained on the same samples with the
same steps, over several training seeds.

    python -m lab.capacity               # 4, 8, 16 slots, the peer, the ceiling; 3 layouts x 3 seeds: 45
                                         # models, ~10-18 min each on one CPU core
    python -m lab.capacity --layouts="('scattered',)" --seeds="(1337,)" --mem_lens="(8,)"   # one cell
    python -m lab.capacity --pool=parts  # the ablation: memoGPT's write slot j starts from part j of the segment
    python -m lab.capacity --quick       # tiny and short: the smoke test
    python -m lab.capacity --mem_lens="(4,)" --peer_mem_lens="()" --ceiling=False --models_from=bench_out \
        --route_alloc=8 --out_dir=bench_out/rounds8   # the models a --keep_models=True run kept, read with 8 rounds

A sample is the recall set's (recall.samples): segment 0 states F key-value facts, each is asked once
in a random later segment, several questions closing a segment when facts outnumber segments, and
every answer is hidden from the input (recall.xy: no answer by elimination). The layout says where the
facts sit in segment 0: clustered (first, "k v k v ...") or scattered (random places, filler between);
memoGPT's write slots win the segment's token pairs by content, one pair a slot, filler to a null matched by content
(the ablations: --route_alloc=0, any number of pairs a slot; --route_null_query=False, the null a logit alone;
--pool=parts, slot j starts from part j of the segment; the lead, off: --route_alloc_grad=True, closed slots pass
their gradient), and the two layouts ask whether where facts sit binds.
restated: clustered, and each fact asked from segment 2 on is stated again with a new value in a segment between
(recall.restate); the answer is the newest value. Each row
is one model per layout and seed, trained on batches of 1, 2, 4, ... facts in turn (one count per batch)
with a curriculum over segments, then scored at every count on held-out samples, at distances beyond its
LTM (only the STM can answer there). Rows: memoGPT by memory slots; the peer, lucidrains'
recurrent-memory-transformer-pytorch (a bench and dev dependency; model.py never imports it) with the same
width, depth, heads and memory tokens, its memory tokens alone (no XL cache; its wrapper drops labels, so
its loss is computed here); the ceiling, the same backbone as a plain GPT reading the whole sample in one
window (no memory needed; the curriculum is its length warmup): an upper bound only where it has learned to
retrieve by key, which at the default budget it has not (RESULTS.md: it answers where memoGPT does). Every row
trains with AdamW, weight decay 0.1: the peer on all its parameters, memoGPT and the ceiling
(model.configure_optimizers) on their blocks' matrices only. Cells are the median over seeds, with the range;
"stored" is ARMT's estimate of the facts actually held, k = n (v a - 1) / (v - 1) for n facts shown, v values and
accuracy a (0 at chance, n when every answer is right).
Results: out_dir/capacity.json, capacity.csv, capacity.png (with matplotlib).
"""
import csv
import datetime
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F
from tqdm import tqdm

import recall
from common import write_atomic
from configurator import at_least, check, configure, device_ok, ints_at_least, pool_ok, seeds_ok, writable_dir
from model import GPT, GPTConfig
from training import cosine_lr, stage_at, train_step

out_dir = "bench_out"
quick = False            # tiny and short: the smoke test (a bare --quick works too)
facts = (1, 2, 4, 8, 16)  # facts per sample, the columns
mem_lens = (4, 8, 16)    # memoGPT rows: memory slots
peer_mem_lens = (8,)     # peer rows (none: ())
ceiling = True           # the in-context row: the same backbone, the whole sample in one window
layouts = ("clustered", "scattered", "restated")  # where the facts sit (recall.samples), and restated keys
seeds = (1337, 1, 2)     # training seeds of every row: cells are their median
ltm = 2
pool = "route"           # what a write slot starts from (model.GPTConfig.pool): parts | route
route_null_query = True  # pool=route: the null matched by content (False: by a logit alone, the ablation)
route_alloc = 4          # pool=route: rounds of allocation, one pair per slot (0: none, the ablation)
route_alloc_grad = False  # pool=route: backward as if no slot were closed (model.GPTConfig)
ltm_drop = 0.25          # share of training steps read with no LTM (train.py's ltm_drop)
seg_len = 32             # tokens per segment: 2 * max(facts) <= seg_len
n_seg = 8                # segments per sample: distances 1..n_seg-1, scored beyond ltm
n_keys = 32
n_values = 16            # chance: 1/16
n_filler = 32
n_layer = 2
n_head = 4
n_embd = 128
batch_size = 32
iters = 1500
curriculum = (2, 4)      # segments per sample in the stages before n_seg, stage_iters each
stage_iters = 300
learning_rate = 1e-3
eval_samples = 200       # per fact count
threads = 0              # torch CPU threads (0 = its default)
keep_models = False      # save every memoGPT row's weights to out_dir/models/ (to look at its slots: lab.route_diag)
models_from = ""         # score the memoGPT models a --keep_models=True run kept in this out_dir instead of training
                         # them: the same settings, but route_alloc (no weights) may differ, the rounds when read
device = "cuda" if torch.cuda.is_available() else "cpu"

# a smoke test writes beside real results, never over them (an explicit --out_dir still wins)
QUICK = dict(out_dir="bench_out/quick", facts=(1, 2), mem_lens=(2,), peer_mem_lens=(2,), seeds=(1337,),
             seg_len=8, n_seg=4, n_layer=1, n_head=2, n_embd=16, batch_size=4, iters=4, stage_iters=1, curriculum=(2,),
             eval_samples=8, threads=1)
config, _ = configure(globals(), quick=QUICK)
check(config, {
    "facts": ints_at_least(1, "facts per sample, a tuple of at least one int >= 1, like (1, 2, 4)"),
    "mem_lens": ints_at_least(1, "memoGPT memory slots, a tuple of ints >= 1 like (4, 8) (none: ())", empty=True),
    "peer_mem_lens": ints_at_least(1, "peer memory tokens, a tuple of ints >= 1 (none: ())", empty=True),
    "layouts": lambda v: (isinstance(v, tuple) and len(v) > 0 and set(v) <= {"clustered", "scattered", "restated"}
                          or "a tuple of clustered, scattered and/or restated, like ('clustered', 'scattered')"),
    "seeds": seeds_ok,
    "pool": pool_ok,
    **{k: at_least(1) for k in ("seg_len", "n_seg", "n_filler", "n_layer", "n_head", "batch_size", "iters",
                                "stage_iters", "eval_samples")},
    "n_values": at_least(2, ": chance is 1/n_values, and facts stored divide by n_values - 1"),
    **{k: at_least(0) for k in ("ltm", "threads", "route_alloc")},
    "ltm_drop": lambda v: 0 <= v <= 1 or "must be in [0, 1]: the share of training steps read with no LTM",
    "curriculum": ints_at_least(1, "segments per sample of the stages before, ints >= 1 like (2, 4)", empty=True),
    "learning_rate": lambda v: 0 < v <= 1 or "must be in (0, 1] (AdamW's step per weight)",
    "n_embd": lambda v: v >= 1 and v % n_head == 0 or f"must be a multiple of n_head={n_head}",
    "n_keys": lambda v: v >= max(facts) or "must be >= max(facts): each fact of a sample has its own key",
    "device": device_ok,
    "out_dir": writable_dir("output directory"),
})
if not (mem_lens or peer_mem_lens or ceiling):
    raise SystemExit("no rows to train: give --mem_lens, --peer_mem_lens or --ceiling=True")


def kept_path(folder, mem_len, layout, seed):
    return os.path.join(folder, "models", f"M{mem_len}_{layout}_{seed}.pt")


if models_from:
    if peer_mem_lens or ceiling or not mem_lens:
        raise SystemExit("--models_from scores kept memoGPT models only: give --mem_lens, --peer_mem_lens=() and "
                         "--ceiling=False")
    for path in [kept_path(models_from, m, lay, s) for lay in layouts for m in mem_lens for s in seeds]:
        if not os.path.isfile(path):
            raise SystemExit(f"--models_from={models_from}: no {path}; keep them with --keep_models=True "
                             f"--out_dir={models_from} and the same --layouts, --mem_lens, --seeds")
if 2 * max(facts) > seg_len or max(facts) > (n_seg - 1) * (seg_len // 3) or n_seg <= ltm + 1:
    raise SystemExit(f"need 2 * max(facts) <= seg_len, max(facts) <= (n_seg-1) * (seg_len//3) questions and "
                     f"n_seg > ltm + 1 (distances beyond the LTM); got facts={facts}, seg_len={seg_len}, "
                     f"n_seg={n_seg}, ltm={ltm}")
if peer_mem_lens:  # before hours of memoGPT rows, not at the first peer row
    try:
        from recurrent_memory_transformer_pytorch import RecurrentMemoryTransformer
    except ImportError:
        raise SystemExit("the peer needs pip install recurrent-memory-transformer-pytorch==0.7.0 (pip install -r "
                         "requirements-dev.txt), or --peer_mem_lens=()") from None
if threads:
    torch.set_num_threads(threads)


def recall_cfg(n_facts, layout):
    return dict(seg_len=seg_len, n_seg=n_seg, n_facts=n_facts, n_keys=n_keys, n_values=n_values, n_filler=n_filler,
                layout="scattered" if layout == "scattered" else "clustered", restate=layout == "restated")


def batch(rng, n_facts, n, segs, layout):
    """n samples of n_facts facts, cut to their first segs segments: inputs and answer targets on the device."""
    x, y = recall.sample_xy(recall.samples(n, recall_cfg(n_facts, layout), rng)[:, :segs * seg_len])
    return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)


class Peer(nn.Module):
    """The peer RMT read segment by segment, its memory tokens carried across; logits (B, T, vocab), loss."""

    def __init__(self, mem_len, vocab_size):
        super().__init__()
        self.net = RecurrentMemoryTransformer(n_embd, num_tokens=vocab_size, depth=n_layer, num_memory_tokens=mem_len,
                                              seq_len=seg_len, dim_head=n_embd // n_head, heads=n_head,
                                              use_xl_memories=False)

    def forward(self, x, y):
        mem, logits = None, []
        for s in range(0, x.size(1), seg_len):
            out, mem, _ = self.net(x[:, s:s + seg_len], mem)
            logits.append(out)
        logits = torch.cat(logits, dim=1)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1, reduction="sum")
        return logits, loss / (y != -1).sum().clamp(min=1)


def build(kind, mem_len, vocab_size, seed):
    torch.manual_seed(seed)
    if kind == "peer":
        model = Peer(mem_len, vocab_size)
        return model, torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.95), weight_decay=0.1)
    # the ceiling is a plain GPT (mem_len 0) whose window holds the whole sample
    model = GPT(GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=vocab_size, mem_len=mem_len,
                          ltm=ltm, seg_len=seg_len, pool=pool, route_alloc=route_alloc,
                          route_null_query=route_null_query, route_alloc_grad=route_alloc_grad,
                          block_size=seg_len if mem_len else n_seg * seg_len))
    return model, model.configure_optimizers(0.1, learning_rate, (0.9, 0.95), device)


def run(model, x, y, ltm_size=None):
    if isinstance(model, Peer):
        return model(x, y)
    logits, loss, _ = model(x, y, ltm_size=ltm_size)
    return logits, loss


def train(kind, mem_len, vocab_size, layout, seed):
    """One model: the same batches and steps for every row of a seed (the data generator restarts from it)."""
    model, optimizer = build(kind, mem_len, vocab_size, seed)
    model.to(device).train()
    scaler = torch.amp.GradScaler(device, enabled=False)  # float32: the scaler does nothing
    rng, stages = np.random.default_rng(seed), (*curriculum, n_seg)
    # a bar on a terminal; a redirected log gets the one line per row below, not a stream of updates
    for it in tqdm(range(iters), desc=f"training {kind} M={mem_len} {layout} seed {seed}", leave=False,
                   disable=not sys.stderr.isatty()):
        x, y = batch(rng, facts[it % len(facts)], batch_size, stages[stage_at(it, curriculum, stage_iters)], layout)
        no_ltm = ltm_drop and rng.random() < ltm_drop  # drawn for every row: each sees the same batches
        ltm_size = 0 if no_ltm and kind == "memoGPT" else None
        loss = train_step(model, optimizer, scaler, cosine_lr(it, learning_rate, learning_rate / 10, 50, iters), 1.0,
                          [(x, y)], loss_of=lambda m, x, y: run(m, x, y, ltm_size)[1], ctx=nullcontext())
    if not math.isfinite(loss.item()):  # its scores would be chance, written as if measured
        raise SystemExit(f"{kind} M={mem_len} {layout} seed {seed}: the training loss is {loss.item()} after {iters} "
                         "iterations: lower --learning_rate")
    return model.eval()


def load_kept(mem_len, vocab_size, layout, seed):
    """A model --keep_models=True saved, built with this run's settings (the weights must fit them)."""
    model, _ = build("memoGPT", mem_len, vocab_size, seed)
    path = kept_path(models_from, mem_len, layout, seed)
    try:
        model.load_state_dict(torch.load(path, map_location=device, weights_only=True)["model"])
    except RuntimeError as e:
        raise SystemExit(f"{path} is not a model of these settings (--pool, --route_null_query, the sizes): "
                         f"{str(e).splitlines()[1].strip()}") from None
    return model.to(device).eval()


@torch.no_grad()
def score(model, layout):
    """Exact-answer accuracy by fact count at distances beyond the LTM, on held-out samples: the same for every
    row and seed, drawn from 1338 + n_facts (the one-seed bench's, so its rows stay comparable)."""
    out = {}
    for n_facts in facts:
        x, y = batch(np.random.default_rng(1338 + n_facts), n_facts, eval_samples, n_seg, layout)
        right, total = 0, 0
        for i in range(0, eval_samples, 50):
            logits, _ = run(model, x[i:i + 50], y[i:i + 50])
            yy = y[i:i + 50]
            far = (yy != -1) & ((torch.arange(yy.size(1), device=device) + 1) // seg_len > ltm)
            right += (logits[far].argmax(-1) == yy[far]).sum().item()
            total += far.sum().item()
        out[n_facts] = right / total
    return out


def stored(n, a):
    """ARMT's estimate of the facts held when n are shown and a fraction a is answered exactly: a = k/n + (1 - k/n)/v
    (k known, the rest guessed among v values), so k = n (v a - 1) / (v - 1)."""
    return n * (n_values * a - 1) / (n_values - 1)


def summary(kind, mem_len, layout, by_seed, seconds):
    """One row: the median over seeds of each cell, their range, and what the median holds."""
    acc = {f: float(np.median([a[f] for a in by_seed.values()])) for f in facts}
    return dict(kind=kind, mem_len=mem_len, layout=layout, accuracy=acc, seeds=by_seed,
                range={f: (min(a[f] for a in by_seed.values()), max(a[f] for a in by_seed.values())) for f in facts},
                stored={f: stored(f, acc[f]) for f in facts},
                facts_per_slot_at_90=max([f for f in facts if acc[f] >= 0.9], default=0) / mem_len if mem_len else None,
                train_s=round(seconds),
                label={"memoGPT": f"memoGPT, {mem_len} memory slots", "peer": f"peer, {mem_len} memory tokens",
                       "ceiling": "in context (plain GPT, one window)"}[kind])


MARKERS = dict(clustered="o", scattered="s", restated="^")


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        style = {"peer": "--", "ceiling": ":"}.get(r["kind"], "-") + MARKERS[r["layout"]]
        axes[0].plot(facts, [r["accuracy"][f] for f in facts], style, label=f"{r['label']}, {r['layout']}")
    axes[0].axhline(1 / n_values, color="gray", lw=0.8, ls=":", label="chance")
    axes[0].set(xscale="log", xticks=facts, xticklabels=facts, ylim=(0, 1.02), xlabel="facts held at once",
                ylabel=f"exact answers, distance > {ltm} (median of {len(seeds)} seeds)", title="memory capacity")
    axes[0].legend(fontsize=6)
    for layout, marker in MARKERS.items():
        memo = [r for r in rows if r["layout"] == layout and r["kind"] == "memoGPT"]
        axes[1].plot([r["mem_len"] for r in memo], [max(r["stored"].values()) for r in memo], "-" + marker,
                     label=f"memoGPT, {layout}")
        for r in rows:
            if r["layout"] == layout and r["kind"] != "memoGPT":
                x = r["mem_len"] or max((*mem_lens, *peer_mem_lens), default=1)
                axes[1].plot([x], [max(r["stored"].values())], ("x" if r["kind"] == "peer" else "*"),
                             label=f"{r['label']}, {layout}")
    slots = sorted(set(mem_lens))
    axes[1].plot(slots, slots, color="gray", lw=0.8, ls=":", label="one fact per slot")
    axes[1].set(xscale="log", xticks=slots, xticklabels=slots, xlabel="memory slots",
                ylabel="facts stored (most over fact counts)", title="facts stored: k = n (v a - 1) / (v - 1)")
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100), binary=True)


def write_csv(f, rows):
    w = csv.writer(f)
    w.writerow(["model", "layout", "mem_len", *[f"facts_{n}" for n in facts], *[f"stored_{n}" for n in facts],
                "facts_per_slot_at_90"])
    w.writerows([r["kind"], r["layout"], r["mem_len"], *[r["accuracy"][n] for n in facts],
                 *[round(r["stored"][n], 3) for n in facts], r["facts_per_slot_at_90"]] for r in rows)


t_start = time.time()
vocab = len(recall.vocab(recall_cfg(max(facts), layouts[0])))
kinds = ([("memoGPT", m) for m in mem_lens] + [("peer", m) for m in peer_mem_lens]
         + ([("ceiling", 0)] if ceiling else []))
rows = []
for layout in layouts:
    for kind, mem_len in kinds:
        t0, by_seed = time.time(), {}
        for s in seeds:
            model = load_kept(mem_len, vocab, layout, s) if models_from else train(kind, mem_len, vocab, layout, s)
            if keep_models and kind == "memoGPT":
                os.makedirs(os.path.join(out_dir, "models"), exist_ok=True)
                write_atomic(kept_path(out_dir, mem_len, layout, s),
                             lambda f: torch.save(dict(model=model.state_dict(), config=asdict(model.config)), f),
                             binary=True)
            by_seed[s] = score(model, layout)
            tqdm.write(f"{kind} M={mem_len} {layout} seed {s}: "
                       + ", ".join(f"{f} facts {a:.3f}" for f, a in by_seed[s].items()))
        rows.append(summary(kind, mem_len, layout, by_seed, time.time() - t0))

print(f"\n# memory capacity: {datetime.date.today()}, {device}, {torch.get_num_threads()} threads, {n_layer} layers x "
      f"{n_embd}, segments of {seg_len}, {n_seg} per sample, ltm={ltm}, {iters} steps of {batch_size} samples, "
      f"seeds {', '.join(map(str, seeds))}\n")
print(f"Exact answers at distances {ltm + 1}..{n_seg - 1} (beyond the LTM), {eval_samples} held-out samples per count; "
      f"chance {1 / n_values:.3f}; median over seeds (range), and the facts that median stores\n")
for layout in layouts:
    print(f"Facts {layout}:\n")
    print("| model | " + " | ".join(f"{f} facts" for f in facts) + " | facts stored (most) | facts per slot at 90% "
          "| train s |")
    print("|---|" + "---|" * (len(facts) + 3))
    for r in [r for r in rows if r["layout"] == layout]:
        cells = [f"{r['accuracy'][f]:.3f}" + (f" ({r['range'][f][0]:.2f}-{r['range'][f][1]:.2f})" if len(seeds) > 1
                                              else "") for f in facts]
        per_slot = "" if r["facts_per_slot_at_90"] is None else f"{r['facts_per_slot_at_90']:.2f}"
        print(f"| {r['label']} | " + " | ".join(cells) + f" | {max(r['stored'].values()):.1f} | {per_slot} "
              f"| {r['train_s']} |")
    print()
os.makedirs(out_dir, exist_ok=True)
path = os.path.join(out_dir, "capacity")
results = dict(date=str(datetime.date.today()), settings=config, rows=rows, seconds=time.time() - t_start)
write_atomic(path + ".json", lambda f: json.dump(results, f, indent=1))
write_atomic(path + ".csv", lambda f: write_csv(f, rows))
try:
    plot(rows, path + ".png")
    print(f"wrote {path}.png, .json, .csv ({time.time() - t_start:.0f} s)")
except ImportError:
    print(f"matplotlib is not installed: no plot (pip install matplotlib); wrote {path}.json, .csv "
          f"({time.time() - t_start:.0f} s)")
