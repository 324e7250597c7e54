"""
Evaluate a checkpoint train.py wrote. The LTM's size adds no parameters, so every LTM size runs the
same weights, on the same val samples:

 - val loss by segment for each LTM size in ltm_sizes (the paper's second table); on a text set also
   the loss with the memory reset before every segment, and by reach (how many segments back what
   the memory carries comes from)
 - on a recall set: recall accuracy by distance for each LTM size, recall on samples `longer` times
   the trained length (made on the fly by recall.samples), and the memory over stable_segments
   segments of random tokens (finite, bounded)

    python -m lab.eval_ckpt --ckpt=out-recall/ckpt.pt            # the quick start's; data/<its dataset>/
    python -m lab.eval_ckpt --ckpt=out-recall/ckpt.pt --eval_samples=1000 --eval_batch=100   # README's figures
    python -m lab.eval_ckpt --ckpt=out-recall/ckpt.pt --quick    # fewer samples, LTM sizes and segments: seconds

Run from the repository root, as train.py is (data/ is found from there). The default 32 val samples are a
quick look: a recall table is worth quoting on 1000 (python -m lab.report's setting).

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
from common import autocast, machine, table, write_atomic
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
    model, checkpoint = load_model(path, device)
    data_dir = os.path.join("data", checkpoint["config"]["dataset"])
    meta = load_meta(data_dir)
    val = open_split(data_dir, meta, "val", check_ids=True)
    warn_if_memory_never_read(checkpoint, path)
    if differs(checkpoint["meta"], meta):
        raise ValueError(f"{data_dir} is not the data {path} was trained on (tokenizer, vocabulary or sample "
                         "layout differ): run python -m lab.eval_ckpt from the directory train.py ran in")
    cfg = checkpoint["config"]
    check_room(val, cfg["n_seg"] * cfg["seg_len"], meta["sample_len"] if meta["tokenizer"] == "recall" else 0,
               f"the val split of {data_dir}")
    return model.eval(), checkpoint, meta, val


def amp(settings):
    return autocast("cuda" if settings["device"].startswith("cuda") else "cpu", settings["dtype"])


@torch.no_grad()
def losses(model, x, y, seg_len, settings, start=0, **kw):
    """Val loss by segment from segment `start` on (the memory starts empty there), overall too;
    kw: segment_loss_sums' carry and ltm_size."""
    n = x.size(1) // seg_len - start
    sums, counts = torch.zeros(n), torch.zeros(n)
    for i in range(0, len(x), settings["eval_batch"]):
        with amp(settings):
            rows = slice(i, i + settings["eval_batch"])
            sm, c = segment_loss_sums(model, x[rows, start * seg_len:], y[rows, start * seg_len:], seg_len, **kw)
        sums, counts = sums + sm, counts + c
    by_segment = [sm / c if c else None for sm, c in zip(sums.tolist(), counts.tolist())]
    return dict(loss_by_segment=by_segment, loss=(sums.sum() / counts.sum()).item())


def reach_table(model, x, y, seg_len, settings, reset):
    """At segment k, the loss with the memory reset minus with it started empty d segments before: what
    the memory carries from d segments back (None where k < d)."""
    n_seg = x.size(1) // seg_len
    started = [losses(model, x, y, seg_len, settings, start=j)["loss_by_segment"] for j in range(n_seg)]
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
def long_recall(model, meta, n_seg, settings):
    """Recall accuracy by distance band on samples `longer` times the trained n_seg, made on the fly as prepare.py
    makes the recall set (same keys, values, filler and seg_len), each band the mean over its distances."""
    out = []
    for k in tqdm(settings["longer"], desc="longer samples", leave=False):
        n = k * n_seg
        data = recall.samples(settings["long_samples"], dict(meta["settings"], n_seg=n),
                              np.random.default_rng(settings["seed"] + k))
        with amp(settings):
            acc = recall_accuracy(model, data.reshape(-1), dict(meta, n_seg=n, sample_len=n * meta["seg_len"]),
                                  settings["long_samples"], settings["eval_batch"], settings["device"])
        bands = {}
        for d, a in acc.items():
            bands.setdefault(band(d, n_seg), []).append(a)
        out.append(dict(times=k, n_seg=n, by_band={b: statistics.mean(v) for b, v in bands.items()}))
    return out


@torch.no_grad()
def stability(model, seg_len, vocab_size, settings, chunk=10):
    """The trained memory over stable_segments segments of random tokens: STM norm (all slots) after every
    chunk of segments, and whether logits, STM and LTM stayed finite."""
    g = torch.Generator().manual_seed(settings["seed"])
    mem, norms, finite = None, [], True
    n = settings["stable_segments"]
    for _ in tqdm(range(max(1, n // chunk)), desc=f"{n} random segments", leave=False):
        with amp(settings):
            tokens = torch.randint(vocab_size, (1, chunk * seg_len), generator=g).to(settings["device"])
            logits, _, mem = model(tokens, mem=mem)
        norms.append(mem.stm.float().norm().item())
        finite = finite and bool(logits.isfinite().all() and mem.stm.isfinite().all()
                                 and all(t.isfinite().all() for t in mem.snapshots))
    return dict(segments=mem.n_seg, stm_norm_first=norms[0], stm_norm_min=min(norms), stm_norm_max=max(norms),
                finite=finite)


@torch.no_grad()
def evaluate_checkpoint(model, checkpoint, meta, val, settings=None):
    """Everything this script measures, as a dict: loss by segment per LTM size (rows), the memory-reset
    row and reach (text), recall by distance, on longer samples, and stability (recall)."""
    settings = {**DEFAULTS, **(settings or {})}
    cfg, seg_len, n_seg = checkpoint["config"], checkpoint["config"]["seg_len"], checkpoint["config"]["n_seg"]
    is_recall, mem_len = meta["tokenizer"] == "recall", model.config.mem_len
    rows = sample_batch(val, np.random.default_rng(settings["seed"]), settings["eval_samples"], n_seg * seg_len,
                        meta["sample_len"] if is_recall else 0)
    x, y = (torch.from_numpy(a).to(settings["device"])
            for a in inputs_targets(rows, meta, bool(cfg.get("answer_loss"))))
    out = []
    for k in tqdm(settings["ltm_sizes"] if mem_len else (0,), desc="LTM sizes", leave=False):
        with amp(settings):
            acc = recall_accuracy(model, val[0], meta, settings["eval_samples"], settings["eval_batch"],
                                  settings["device"], ltm_size=k) if is_recall else {}
        out.append(dict(ltm=k, **losses(model, x, y, seg_len, settings, ltm_size=k), recall_by_distance=acc))
    # text: what the memory carries, the same samples with it reset before every segment (any ltm: none is kept)
    reset = losses(model, x, y, seg_len, settings, carry=False) if mem_len and not is_recall else None
    reads = is_recall and mem_len > 0
    return dict(mem_len=mem_len, trained_ltm=checkpoint["model_args"]["ltm"], seg_len=seg_len, n_seg=n_seg,
                dataset=cfg["dataset"], answer_loss=bool(cfg.get("answer_loss")), rows=out, reset=reset,
                reach=reach_table(model, x, y, seg_len, settings, reset) if reset else None,
                longer=long_recall(model, meta, n_seg, settings) if reads else None,
                stable=stability(model, seg_len, meta["vocab_size"], settings) if reads else None)


def loss_row(label, r):
    return [label, *("—" if v is None else f"{v:.4f}" for v in r["loss_by_segment"]), f"{r['loss']:.4f}"]


def report(result, path, settings):
    """The markdown tables of evaluate_checkpoint's result for checkpoint path."""
    settings = {**DEFAULTS, **settings}
    rows = result["rows"]
    print(f"\n## {path}: val loss by segment (seg_len {result['seg_len']}, {settings['eval_samples']} samples of "
          f"{result['dataset']}{', answer tokens only' if result['answer_loss'] else ''}) by LTM size; "
          f"trained with ltm={result['trained_ltm']}\n")
    reset = [loss_row("memory reset before every segment", result["reset"])] if result["reset"] else []
    print(table(["ltm", *range(result["n_seg"]), "mean"], [loss_row(row["ltm"], row) for row in rows] + reset))
    if result["reach"]:
        print(f"\n## What the memory carries by reach: at segment k, the loss with the memory reset minus with it "
              f"started empty d segments before (it read segments k-d..k-1; ltm={result['trained_ltm']}). "
              "A memory that accumulates gains down every column\n")
        print(table(["d", *range(result["n_seg"])], [[d, *("" if g is None else f"{g:.4f}" for g in gains)]
                                                      for d, gains in result["reach"].items()]))
    if rows[0]["recall_by_distance"]:
        dist = sorted(rows[0]["recall_by_distance"])
        print("\n## Recall accuracy by distance (segments from fact to question)\n")
        print(table(["ltm", *dist], [[row["ltm"], *(f"{row['recall_by_distance'][d]:.3f}" for d in dist)]
                                     for row in rows]))
    if result["longer"]:
        bands = list(result["longer"][-1]["by_band"])
        print(f"\n## Recall on longer samples than trained ({result['n_seg']} segments), by distance band: "
              f"{settings['long_samples']} samples made on the fly, mean over each band's distances, ltm as "
              "trained\n")
        print(table(["segments", *bands], [[f"{row['n_seg']} ({row['times']}x)",
                                            *(f"{row['by_band'][b]:.3f}" if b in row["by_band"] else "" for b in bands)]
                                           for row in result["longer"]]))
    if result["stable"]:
        st = result["stable"]
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
        raise SystemExit("which checkpoint? python -m lab.eval_ckpt --ckpt=out-recall/ckpt.pt (train.py's "
                         "out_dir/ckpt.pt)")
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
        model, checkpoint, meta, val = load(ckpt, device)
    except (OSError, ValueError) as e:
        raise SystemExit(str(e)) from None
    result = evaluate_checkpoint(model, checkpoint, meta, val, config)
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
