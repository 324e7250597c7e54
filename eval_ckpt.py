"""
Evaluate a checkpoint train.py wrote. The LTM's size adds no parameters, so every LTM size runs the
same weights, on the same val samples:

 - val loss by segment for each LTM size in ltm_sizes (the paper's second table); on a text set also
   the loss with the memory reset before every segment, and by reach (how many segments back what
   the memory carries comes from)
 - on a recall set: recall accuracy by distance for each LTM size, recall on samples `longer` times
   the trained length (made on the fly by recall.samples), and the memory over stable_segments
   segments of random tokens (finite, bounded)

    python eval_ckpt.py --ckpt=out/ckpt.pt           # reads data/<its dataset>/ like train.py
    python eval_ckpt.py --ckpt=out/ckpt.pt --quick   # fewer samples, LTM sizes and segments: seconds

Results: out_dir/eval_ckpt.json (and recall_longer.png with matplotlib). The functions take the
settings as a dict (DEFAULTS, any of them overridden), so a script that holds a model can reuse them.
"""
import datetime
import json
import os
import statistics
import time

import numpy as np
import torch
from tqdm import tqdm

import recall
from checkpoint import load_model, warn_if_memory_never_read
from common import autocast, machine, write_atomic
from configurator import at_least, check, configure, device_ok, dtype_ok, ints_at_least, seed_ok, writable_dir
from data import check_room, differs, inputs_targets, load_meta, open_split, sample_batch
from evaluate import recall_accuracy, segment_loss_sums

ckpt = ""                # train.py's out_dir/ckpt.pt
out_dir = "bench_out"
quick = False            # fewer samples, LTM sizes and segments (a bare --quick works too)
ltm_sizes = (0, 1, 2, 4, 8)  # LTM sizes to evaluate the checkpoint's weights with
eval_samples = 32        # val samples
eval_batch = 32          # samples per forward
longer = (2, 4, 16)      # recall: samples this many times the trained n_seg, made like prepare.py's
long_samples = 256       # recall: samples of each longer length
stable_segments = 10000  # recall: segments of random tokens read after training
device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = "float32"
threads = 0              # CPU threads for torch (0 = its default)
seed = 1337

DEFAULTS = dict(ltm_sizes=ltm_sizes, eval_samples=eval_samples, eval_batch=eval_batch, longer=longer,
                long_samples=long_samples, stable_segments=stable_segments, device=device, dtype=dtype, seed=seed)
# a smoke test writes beside real results, never over them (an explicit --out_dir still wins)
QUICK = dict(out_dir="bench_out/quick",
             ltm_sizes=(0, 1, 2), eval_samples=8, eval_batch=8, longer=(2, 4), long_samples=16, stable_segments=100,
             threads=1)
# the source paper's LTM table (untrained Qwen-1.5B, mem 32, 64-token input): mean loss over 512 / 1024 tokens
PAPER_LTM = {0: (4.6479, 5.0664), 1: (4.6488, 5.0271), 2: (4.6448, 5.0397), 4: (4.6520, 5.0631), 8: (4.6730, 5.2161)}


def load(path, device):
    """The model (eval mode), its checkpoint dict, its data's meta and val shards, data/<its dataset>/ found
    from the working directory as train.py finds it. A problem raises OSError or ValueError, one line."""
    model, ck = load_model(path, device)
    data_dir = os.path.join("data", ck["config"]["dataset"])
    meta = load_meta(data_dir)
    val = open_split(data_dir, meta, "val", check_ids=True)
    warn_if_memory_never_read(ck, path)
    if differs(ck["meta"], meta):
        raise ValueError(f"{data_dir} is not the data {path} was trained on (tokenizer, vocabulary or sample "
                         "layout differ): run eval_ckpt.py from the directory train.py ran in")
    cfg = ck["config"]
    check_room(val, cfg["n_seg"] * cfg["seg_len"], meta["sample_len"] if meta["tokenizer"] == "recall" else 0,
               f"the val split of {data_dir}")
    return model.eval(), ck, meta, val


def amp(s):
    return autocast("cuda" if s["device"].startswith("cuda") else "cpu", s["dtype"])


@torch.no_grad()
def losses(model, x, y, S, s, start=0, **kw):
    """Val loss by segment from segment `start` on (the memory starts empty there), overall too;
    kw: segment_loss_sums' carry and ltm_size."""
    n = x.size(1) // S - start
    sums, counts = torch.zeros(n), torch.zeros(n)
    for i in range(0, len(x), s["eval_batch"]):
        with amp(s):
            sm, c = segment_loss_sums(model, x[i:i + s["eval_batch"], start * S:], y[i:i + s["eval_batch"], start * S:],
                                      S, **kw)
        sums, counts = sums + sm, counts + c
    by_segment = [sm / c if c else None for sm, c in zip(sums.tolist(), counts.tolist())]
    return dict(loss_by_segment=by_segment, loss=(sums.sum() / counts.sum()).item())


def reach_table(model, x, y, S, s, reset):
    """At segment k, the loss with the memory reset minus with it started empty d segments before: what
    the memory carries from d segments back (None where k < d)."""
    n_seg = x.size(1) // S
    started = [losses(model, x, y, S, s, start=j)["loss_by_segment"] for j in range(n_seg)]
    return {d: [None if k < d else reset["loss_by_segment"][k] - started[k - d][d] for k in range(n_seg)]
            for d in range(1, n_seg)}


def band(d, n):
    """Distance d's band: 1..n-1 (as trained, n the trained n_seg), then n..2n-1, 2n..4n-1, ..."""
    if d < n:
        return f"1-{n - 1}"
    while 2 * n <= d:
        n *= 2
    return f"{n}-{2 * n - 1}"


@torch.no_grad()
def long_recall(model, meta, n_seg, s):
    """Recall accuracy by distance band on samples `longer` times the trained n_seg, made on the fly as prepare.py
    makes the recall set (same keys, values, filler and seg_len), each band the mean over its distances."""
    out = []
    for k in tqdm(s["longer"], desc="longer samples", leave=False):
        n = k * n_seg
        data = recall.samples(s["long_samples"], dict(meta["settings"], n_seg=n), np.random.default_rng(s["seed"] + k))
        with amp(s):
            acc = recall_accuracy(model, data.reshape(-1), dict(meta, n_seg=n, sample_len=n * meta["seg_len"]),
                                  s["long_samples"], s["eval_batch"], s["device"])
        bands = {}
        for d, a in acc.items():
            bands.setdefault(band(d, n_seg), []).append(a)
        out.append(dict(times=k, n_seg=n, by_band={b: statistics.mean(v) for b, v in bands.items()}))
    return out


@torch.no_grad()
def stability(model, S, vocab_size, s, chunk=10):
    """The trained memory over stable_segments segments of random tokens: STM norm (all slots) after every
    chunk of segments, and whether logits, STM and LTM stayed finite."""
    g = torch.Generator().manual_seed(s["seed"])
    mem, norms, finite = None, [], True
    n = s["stable_segments"]
    for _ in tqdm(range(max(1, n // chunk)), desc=f"{n} random segments", leave=False):
        with amp(s):
            logits, _, mem = model(torch.randint(vocab_size, (1, chunk * S), generator=g).to(s["device"]), mem=mem)
        norms.append(mem.stm.float().norm().item())
        finite = finite and bool(logits.isfinite().all() and mem.stm.isfinite().all()
                                 and all(t.isfinite().all() for t in mem.snapshots))
    return dict(segments=mem.n_seg, stm_norm_first=norms[0], stm_norm_min=min(norms), stm_norm_max=max(norms),
                finite=finite)


@torch.no_grad()
def evaluate_checkpoint(model, ck, meta, val, settings=None):
    """Everything this script measures, as a dict: loss by segment per LTM size (rows), the memory-reset
    row and reach (text), recall by distance, on longer samples, and stability (recall)."""
    s = {**DEFAULTS, **(settings or {})}
    cfg, S, n_seg = ck["config"], ck["config"]["seg_len"], ck["config"]["n_seg"]
    is_recall, mem_len = meta["tokenizer"] == "recall", model.config.mem_len
    rows = sample_batch(val, np.random.default_rng(s["seed"]), s["eval_samples"], n_seg * S,
                        meta["sample_len"] if is_recall else 0)
    x, y = (torch.from_numpy(a).to(s["device"]) for a in inputs_targets(rows, meta, bool(cfg.get("answer_loss"))))
    out = []
    for k in tqdm(s["ltm_sizes"] if mem_len else (0,), desc="LTM sizes", leave=False):
        with amp(s):
            acc = recall_accuracy(model, val[0], meta, s["eval_samples"], s["eval_batch"], s["device"],
                                  ltm_size=k) if is_recall else {}
        out.append(dict(ltm=k, **losses(model, x, y, S, s, ltm_size=k), recall_by_distance=acc))
    # text: what the memory carries, the same samples with it reset before every segment (any ltm: none is kept)
    reset = losses(model, x, y, S, s, carry=False) if mem_len and not is_recall else None
    reads = is_recall and mem_len > 0
    return dict(mem_len=mem_len, trained_ltm=ck["model_args"]["ltm"], seg_len=S, n_seg=n_seg, dataset=cfg["dataset"],
                answer_loss=bool(cfg.get("answer_loss")), rows=out, reset=reset,
                reach=reach_table(model, x, y, S, s, reset) if reset else None,
                longer=long_recall(model, meta, n_seg, s) if reads else None,
                stable=stability(model, S, meta["vocab_size"], s) if reads else None)


def table(header, rows):
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def loss_row(label, r):
    return [label, *("—" if v is None else f"{v:.4f}" for v in r["loss_by_segment"]), f"{r['loss']:.4f}"]


def report(r, path, s):
    """The markdown tables of evaluate_checkpoint's result r for checkpoint path."""
    s = {**DEFAULTS, **s}
    rows = r["rows"]
    print(f"\n## {path}: val loss by segment (seg_len {r['seg_len']}, {s['eval_samples']} samples of "
          f"{r['dataset']}{', answer tokens only' if r['answer_loss'] else ''}) by LTM size; "
          f"trained with ltm={r['trained_ltm']}\n")
    reset = [loss_row("memory reset before every segment", r["reset"])] if r["reset"] else []
    print(table(["ltm", *range(r["n_seg"]), "mean"], [loss_row(row["ltm"], row) for row in rows] + reset))
    if r["reach"]:
        print(f"\n## What the memory carries by reach: at segment k, the loss with the memory reset minus with it "
              f"started empty d segments before (it read segments k-d..k-1; ltm={r['trained_ltm']}). "
              "A memory that accumulates gains down every column\n")
        print(table(["d", *range(r["n_seg"])], [[d, *("" if g is None else f"{g:.4f}" for g in gains)]
                                                 for d, gains in r["reach"].items()]))
    if rows[0]["recall_by_distance"]:
        dist = sorted(rows[0]["recall_by_distance"])
        print("\n## Recall accuracy by distance (segments from fact to question)\n")
        print(table(["ltm", *dist], [[row["ltm"], *(f"{row['recall_by_distance'][d]:.3f}" for d in dist)]
                                     for row in rows]))
    if r["longer"]:
        bands = list(r["longer"][-1]["by_band"])
        print(f"\n## Recall on longer samples than trained ({r['n_seg']} segments), by distance band: "
              f"{s['long_samples']} samples made on the fly, mean over each band's distances, ltm as trained\n")
        print(table(["segments", *bands], [[f"{row['n_seg']} ({row['times']}x)", *(f"{row['by_band'][b]:.3f}"
                                            if b in row["by_band"] else "" for b in bands)] for row in r["longer"]]))
    if r["stable"]:
        st = r["stable"]
        print(f"\nAfter {st['segments']:,} segments of random tokens: STM norm {st['stm_norm_min']:.2f}.."
              f"{st['stm_norm_max']:.2f} (first reading {st['stm_norm_first']:.2f}); logits, STM and LTM "
              f"{'all finite' if st['finite'] else 'NOT FINITE'}")
    print("\n## The paper's LTM table (untrained Qwen-1.5B, mem 32, 64-token input): mean loss over 512 / 1024 "
          "tokens\n")
    print(table(["ltm", "512", "1024"], [[k, *v] for k, v in PAPER_LTM.items()]))


def plot_longer(longer_rows, path):
    """Recall accuracy by distance band, a line per sample length (a recall checkpoint)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in longer_rows:
        ax.plot(list(r["by_band"]), list(r["by_band"].values()), "o-", label=f"samples of {r['n_seg']} segments")
    ax.set(xlabel="distance from fact to question (segments)", ylabel="exact answers", ylim=(0, 1.02),
           title=f"recall beyond the trained {longer_rows[0]['n_seg'] // longer_rows[0]['times']} segments")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100), binary=True)


if __name__ == "__main__":
    config, _ = configure(globals(), quick=QUICK)
    if not ckpt:
        raise SystemExit("which checkpoint? python eval_ckpt.py --ckpt=out/ckpt.pt (train.py's out_dir/ckpt.pt)")
    check(config, {
        "ckpt": lambda v: isinstance(v, str) or "a checkpoint path",
        "ltm_sizes": ints_at_least(0, "need ltm_sizes, a tuple of at least one LTM size >= 0, like (0, 1, 2)"),
        **{k: at_least(1) for k in ("eval_samples", "eval_batch", "long_samples", "stable_segments")},
        "longer": ints_at_least(1, "a tuple of ints >= 1, like (2, 4)", empty=True),
        "threads": at_least(0),
        "seed": seed_ok,
        "device": device_ok,
        "dtype": dtype_ok(device),
        "out_dir": writable_dir("output directory"),
    })
    if threads:
        torch.set_num_threads(threads)
    t_start = time.time()
    try:
        model, ck, meta, val = load(ckpt, device)
    except (OSError, ValueError) as e:
        raise SystemExit(str(e)) from None
    result = evaluate_checkpoint(model, ck, meta, val, config)
    print(f"\n# memoGPT checkpoint: {datetime.date.today()}, {machine(device)}, torch {torch.__version__}, {device}, "
          f"{dtype}, {torch.get_num_threads()} threads")
    report(result, ckpt, config)
    os.makedirs(out_dir, exist_ok=True)
    results = dict(date=str(datetime.date.today()), machine=machine(device), torch=torch.__version__, device=device,
                   settings=config, ckpt=ckpt, **result, paper_ltm=PAPER_LTM, runtime_s=time.time() - t_start)
    write_atomic(os.path.join(out_dir, "eval_ckpt.json"), lambda f: json.dump(results, f, indent=1))
    plotted = ""
    if result["longer"]:
        try:
            plot_longer(result["longer"], os.path.join(out_dir, "recall_longer.png"))
            plotted = "recall_longer.png, "
        except ImportError:
            print("\nmatplotlib is not installed: no plot (pip install matplotlib for recall_longer.png)")
    print(f"\nwrote {out_dir}/: {plotted}eval_ckpt.json ({time.time() - t_start:.0f} s)")
