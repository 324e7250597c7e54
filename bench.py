"""
Measure what memoGPT claims, with the plain GPT-2 baseline beside it:

 1. peak inference memory while generating N tokens (the paper's table), and the Stream's
    state bytes, which are exact and device independent
 2. per-token latency at positions latency_at, all positions and rows timed in turns in one
    process, so that whatever else runs on the machine slows them alike
 3. training tokens/s, memoGPT against the plain GPT of the same size and total length, and memoGPT's
    peak training memory by segments per sample (train_n_seg), with and without recompute
 4. with --ckpt: per-segment val loss by LTM size (the paper's second table) and recall
    accuracy by distance, same weights (the LTM's size adds no parameters); for a recall checkpoint also recall
    on samples `longer` times the trained length, made on the fly, and the memory over stable_segments
    segments of random tokens (finite, bounded)

    python bench.py                          # GPT-2 medium shape, random weights
    python bench.py --quick                  # tiny shapes in seconds (the smoke test)
    python bench.py --ckpt=out/ckpt.pt       # also part 4 (reads data/<its dataset>/ like train.py)

Every memory cell runs in a fresh process (this script with --cell=ROW:LENGTH, a training one with
--cell=train:ROW:N_SEG:RECOMPUTE) so its peak is its own: peak RSS on CPU, torch.cuda.max_memory_allocated on CUDA. Results go to out_dir as
results.json and memory.csv (and bench.png when matplotlib is installed).
"""
import copy
import csv
import datetime
import json
import os
import platform
import runpy
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
from tqdm import tqdm

from configurator import configure
from data import load_meta, open_split, recall_xy, sample_batch
from evaluate import recall_accuracy, segment_loss_sums, warn_if_memory_never_read
from model import GPT, GPTConfig, Stream, read_samples
from prepare import recall_samples

out_dir = "bench_out"
quick = False            # tiny shapes, seconds: the smoke test (a bare --quick works too)
shapes = "gpt2-medium"   # comma-separated names in SHAPES: a baseline row and a memoGPT row each
mem_len = 32             # the memoGPT rows' memory
ltm = 4
seg_len = 256
lengths = (64, 128, 256, 512, 1024, 4096, 16384)  # tokens generated per memory cell
feed_chunk = 256         # tokens per Stream.feed call on the way to a cell's length (the same state as
                         # generating them; 1 = generate them one by one with model.generate_stream)
latency_at = (1024, 4096, 16384)  # positions at which per-token latency is timed
latency_tokens = 16      # tokens generated one by one, and timed, at each of them
warmup_steps = 1         # training steps not timed
train_steps = 3          # training steps timed per model
train_n_seg = (1, 2, 4, 8)  # training memory: segments per sample (memoGPT), each with and without recompute
batch_size = 1           # training and part 4
ckpt = ""                # train.py's out_dir/ckpt.pt: adds part 4
ltms = (0, 1, 2, 4, 8)   # part 4: LTM sizes to evaluate the checkpoint's weights with
eval_samples = 32        # part 4: val samples
eval_batch = 32          # part 4: samples per forward
longer = (2, 4, 16)      # part 4, recall: samples this many times the trained n_seg, made like prepare.py's
long_samples = 256       # part 4, recall: samples of each longer length
stable_segments = 10000  # part 4, recall: segments of random tokens read after training
device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = "float32"        # float32 like the paper (1416 MB at 64 tokens ~ GPT-2 medium's fp32 weights)
compile = False          # torch.compile the training models
threads = 0              # CPU threads for torch (0 = its default); 1 keeps timings steady when other
                         # processes share the cores (two threads then stall each other at every op)
seed = 1337
cell = ""                # internal: run one memory cell (ROW:LENGTH) in this process, print its JSON

SHAPES = {  # random weights: memory and speed do not depend on their values
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=128, vocab_size=512),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024, vocab_size=50257),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, block_size=1024, vocab_size=50257),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600, block_size=1024, vocab_size=50257),
}
QUICK = dict(shapes="tiny", mem_len=8, ltm=2, seg_len=32, lengths=(64, 1024, 4096), feed_chunk=32,
             latency_at=(1024, 4096), latency_tokens=8, train_steps=2, train_n_seg=(1, 2), ltms=(0, 1, 2), eval_samples=8, batch_size=2,
             eval_batch=8, longer=(2, 4), long_samples=16, stable_segments=100, threads=1)
# the source paper's GPU figures (MB) at 64/128/256/512/1024 tokens, and its LTM table (untrained
# Qwen-1.5B, mem 32, 64-token input: mean loss over 512 / 1024 tokens by LTM size)
PAPER_LENGTHS = (64, 128, 256, 512, 1024)
PAPER_MEMORY = {"GPT-2 Medium": (1416, 1447, 1508, 1629, 1874), "GPT-2 Large": (3115, 3162, 3255, 3440, 3811),
                "Llama-3.1-8B-Instruct": (30935, 31222, 31802, 34045, 42128)}
PAPER_LTM = {0: (4.6479, 5.0664), 1: (4.6488, 5.0271), 2: (4.6448, 5.0397), 4: (4.6520, 5.0631), 8: (4.6730, 5.2161)}

if "--capacity" in sys.argv[1:]:  # the capacity benchmark trains models: its own script and settings
    sys.argv.remove("--capacity")
    runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "capacity.py"), run_name="__main__")
    raise SystemExit(0)
args = ["--quick=True" if a == "--quick" else a for a in sys.argv[1:]]
if "--quick=True" in args:
    globals().update(QUICK)  # before the command line, which still overrides them
config = configure(globals(), args)
names = shapes.split(",")
if any(n not in SHAPES for n in names):
    raise SystemExit(f"unknown shape in --shapes={shapes}: choose from {', '.join(SHAPES)}")
if not 0 < seg_len <= min(SHAPES[n]["block_size"] for n in names) or mem_len < 1 or ltm < 0:
    raise SystemExit(f"need mem_len >= 1, ltm >= 0 and 0 < seg_len <= block_size; got mem_len={mem_len}, "
                     f"ltm={ltm}, seg_len={seg_len}")
if min(lengths + latency_at + train_n_seg) < 1 or feed_chunk < 1 or latency_tokens < 1 or train_steps < 1:
    raise SystemExit("lengths, latency_at, train_n_seg, feed_chunk, latency_tokens and train_steps must be >= 1")
if ckpt and not os.path.isfile(ckpt):
    raise SystemExit(f"no checkpoint at {ckpt}: train one with train.py, or leave --ckpt out")
if threads:
    torch.set_num_threads(threads)
cuda = device.startswith("cuda")
if not cuda and not os.path.exists("/proc/self/clear_refs"):
    raise SystemExit("peak RSS on CPU is read from /proc/self (Linux): run on Linux or on CUDA")
ptdtype = getattr(torch, dtype)
ctx = torch.amp.autocast("cuda" if cuda else "cpu", dtype=ptdtype) if dtype != "float32" else nullcontext()
MB = 2 ** 20
REF = 1024  # the goals compare the longest length (latency: position) with this one
ROWS = [r for n in names for r in (n, n + "+mem")]  # a row: shape, +mem = memoGPT at that shape


def row_label(row):
    shape, memo = row.removesuffix("+mem"), row.endswith("+mem")
    return f"memoGPT, {shape} shape (M={mem_len}, K={ltm}, S={seg_len})" if memo else f"{shape} (KV cache)"


def build(row):
    shape = row.removesuffix("+mem")
    memory = dict(mem_len=mem_len, ltm=ltm, seg_len=seg_len) if row.endswith("+mem") else {}
    torch.manual_seed(seed)
    return GPT(GPTConfig(**SHAPES[shape], dropout=0.0, bias=True, **memory)).to(device)


def sync():
    if cuda:
        torch.cuda.synchronize()


def memory(reset=False):
    """(now, peak) bytes of this process: allocated on CUDA, resident (RSS) on CPU. reset: the peak
    starts afresh (Linux clear_refs), so what building the model briefly held does not count."""
    if cuda:
        if reset:
            torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated(), torch.cuda.max_memory_allocated()
    if reset:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f)
    return tuple(int(status[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM"))


def tokens_for(model, n):
    return torch.randint(model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(seed)).to(device)


@torch.no_grad()
def read(model, stream, tokens, start, end, bar):
    """Feed tokens[start:end] to the stream, feed_chunk at a time; 1: model.generate_stream makes all but the first."""
    if feed_chunk == 1 and end > start:
        for _ in model.generate_stream(tokens[:, start:start + 1], end - start - 1, stream=stream):
            bar.update(1)
    else:
        for i in range(start, end, feed_chunk):
            stream.feed(tokens[:, i:min(i + feed_chunk, end)])
            bar.update(min(feed_chunk, end - i))
    sync()


def run_cell(row, length):
    """Peak memory of a fresh process that reads `length` tokens into a fresh Stream."""
    runtime, _ = memory()
    model = build(row).to(ptdtype).eval()
    loaded, _ = memory(reset=True)  # the weights are in; the peak is counted from here
    stream = Stream(model, 1)
    read(model, stream, tokens_for(model, length), 0, length, tqdm(disable=True))
    (_, peak), state = memory(), stream.nbytes()
    return dict(row=row, length=length, peak_mb=peak / MB, loaded_mb=loaded / MB, runtime_mb=runtime / MB,
                state_mb=state / MB)


def run_latency():
    """Per-token latency at each position in latency_at, for every row: the Stream is copied at each position
    (Stream rebinds its state, never changes it in place) and all copies generate a token in turns."""
    positions, gens = sorted(latency_at), {}
    with tqdm(total=len(ROWS) * positions[-1], desc="latency: reading", unit="tok") as bar:
        for row in ROWS:
            model = build(row).to(ptdtype).eval()
            tokens, stream, start = tokens_for(model, positions[-1] + 1), Stream(model, 1), 0
            for n in positions:
                read(model, stream, tokens, start, n, bar)
                gens[row, n] = model.generate_stream(tokens[:, n:n + 1], latency_tokens, stream=copy.copy(stream))
                start = n
    times = {k: [] for k in gens}
    for _ in tqdm(range(latency_tokens), desc="latency: timing", unit="round"):
        for k, gen in gens.items():
            t0 = time.perf_counter()
            next(gen)
            sync()
            times[k].append(1e3 * (time.perf_counter() - t0))
    return [dict(row=row, position=n, ms=statistics.median(t), max_ms=max(t)) for (row, n), t in times.items()]


def train_step(model, optimizer, scaler, x, y, recompute=False):
    """One training step as train.py takes it; returns (forward, backward, optimizer) seconds."""
    t0 = time.perf_counter()
    with ctx:
        _, loss = read_samples(model, x, y, seg_len, recompute=recompute)
    sync()
    t1 = time.perf_counter()
    scaler.scale(loss).backward()
    sync()
    t2 = time.perf_counter()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    sync()
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def trainer(row):
    model = build(row).train()
    optimizer = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cuda" if cuda else "cpu")
    return model, optimizer, torch.amp.GradScaler("cuda" if cuda else "cpu", enabled=dtype == "float16")


def random_xy(model, T):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(model.config.vocab_size, (batch_size, T), generator=g).to(device) for _ in range(2))


def run_train_cell(row, n_seg, recompute):
    """Peak memory of a fresh process that takes one training step on samples of n_seg segments: weights,
    gradients, AdamW's moments (made by the step) and the activations the backward pass needs."""
    model, optimizer, scaler = trainer(row)
    loaded, _ = memory(reset=True)
    train_step(model, optimizer, scaler, *random_xy(model, n_seg * seg_len), recompute)
    _, peak = memory()
    return dict(row=row, n_seg=n_seg, recompute=recompute, peak_mb=peak / MB, loaded_mb=loaded / MB)


def train_speed(row):
    """Tokens/s of forward + backward + optimizer step at T=block_size, median of train_steps timed steps."""
    model, optimizer, scaler = trainer(row)
    T = model.config.block_size
    step_model = torch.compile(model) if compile else model
    x, y = random_xy(model, T)
    parts = [train_step(step_model, optimizer, scaler, x, y)  # (forward, backward, optimizer) seconds per step
             for _ in tqdm(range(warmup_steps + train_steps), desc=f"training {row}", leave=False)]
    fwd, bwd, opt = (statistics.median(p[k] for p in parts[warmup_steps:]) for k in range(3))
    return dict(row=row, T=T, tokens_per_s=batch_size * T / (fwd + bwd + opt), forward_s=fwd, backward_s=bwd,
                optimizer_s=opt, params_m=sum(p.numel() for p in model.parameters()) / 1e6)


@torch.no_grad()
def ltm_eval():
    """Part 4: the checkpoint's weights with each LTM size in ltms (its size adds no parameters), on the same val samples."""
    try:
        model, ck = GPT.from_checkpoint(ckpt, device)
        cfg, S = ck["config"], ck["config"]["seg_len"]
        data_dir = os.path.join("data", cfg["dataset"])
        meta = load_meta(data_dir)
        val = open_split(data_dir, meta, "val")
    except (OSError, ValueError) as e:
        raise SystemExit(str(e)) from None
    warn_if_memory_never_read(ck, ckpt)
    model.eval()
    same = ("tokenizer", "vocab_size", "itos", "sample_len")  # data/ is found from here, as train.py does
    if any(meta.get(k) != ck["meta"].get(k) for k in same):
        raise SystemExit(f"{data_dir} is not the data {ckpt} was trained on (tokenizer, vocabulary or sample "
                         "layout differ): run bench.py from the directory train.py ran in")
    recall = meta["tokenizer"] == "recall"
    rows = sample_batch(val, np.random.default_rng(seed), eval_samples, cfg["n_seg"] * S,
                        meta["sample_len"] if recall else 0)
    x, y = recall_xy(rows, meta) if cfg.get("answer_loss") else (rows[:, :-1], rows[:, 1:])
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    def losses(start=0, **kw):  # from segment `start` on, with segment_loss_sums' carry and ltm
        sums, counts = torch.zeros(cfg["n_seg"] - start), torch.zeros(cfg["n_seg"] - start)
        for i in range(0, len(x), eval_batch):
            with ctx:
                s, c = segment_loss_sums(model, x[i:i + eval_batch, start * S:], y[i:i + eval_batch, start * S:], S,
                                         **kw)
            sums, counts = sums + s, counts + c
        by_segment = [s / c if c else None for s, c in zip(sums.tolist(), counts.tolist())]
        return dict(loss_by_segment=by_segment, loss=(sums.sum() / counts.sum()).item())

    out = []
    for k in tqdm(ltms if model.config.mem_len else (0,), desc="LTM sizes", leave=False):
        with ctx:
            acc = recall_accuracy(model, val[0], meta, eval_samples, eval_batch, device, ltm=k) if recall else {}
        out.append(dict(ltm=k, **losses(ltm=k), recall_by_distance=acc))
    # text: what the memory carries, the same samples with it reset before every segment (any ltm: none is kept)
    reset = losses(carry=False) if model.config.mem_len and not recall else None
    reach = None
    if reset:  # how far back what the memory carries comes from: at segment k, the memory started empty at k - d
        started = [losses(start=j)["loss_by_segment"] for j in range(cfg["n_seg"])]
        reach = {d: [None if k < d else reset["loss_by_segment"][k] - started[k - d][d] for k in range(cfg["n_seg"])]
                 for d in range(1, cfg["n_seg"])}
    memory = recall and model.config.mem_len
    return dict(ckpt=ckpt, mem_len=model.config.mem_len, trained_ltm=ck["model_args"]["ltm"], seg_len=S,
                n_seg=cfg["n_seg"], dataset=cfg["dataset"], answer_loss=bool(cfg.get("answer_loss")), rows=out,
                reset=reset, reach=reach, longer=long_recall(model, meta, cfg["n_seg"]) if memory else None,
                stable=stability(model, S, meta["vocab_size"]) if memory else None)


def band(d, n):
    """Distance d's band: 1..n-1 (as trained, n the trained n_seg), then n..2n-1, 2n..4n-1, ..."""
    if d < n:
        return f"1-{n - 1}"
    while 2 * n <= d:
        n *= 2
    return f"{n}-{2 * n - 1}"


@torch.no_grad()
def long_recall(model, meta, n_seg):
    """Recall accuracy by distance band on samples `longer` times the trained n_seg, made on the fly as prepare.py
    makes the recall set (same keys, values, filler and seg_len), each band the mean over its distances."""
    out = []
    for k in tqdm(longer, desc="longer samples", leave=False):
        n = k * n_seg
        data = recall_samples(long_samples, dict(meta["settings"], n_seg=n), np.random.default_rng(seed + k))
        with ctx:
            acc = recall_accuracy(model, data.reshape(-1), dict(meta, n_seg=n, sample_len=n * meta["seg_len"]),
                                  long_samples, eval_batch, device)
        bands = {}
        for d, a in acc.items():
            bands.setdefault(band(d, n_seg), []).append(a)
        out.append(dict(times=k, n_seg=n, by_band={b: statistics.mean(v) for b, v in bands.items()}))
    return out


@torch.no_grad()
def stability(model, S, vocab_size, chunk=10):
    """The trained memory over stable_segments segments of random tokens: STM norm (all slots) after every
    chunk of segments, and whether logits, STM and LTM stayed finite."""
    g = torch.Generator().manual_seed(seed)
    mem, norms, finite = None, [], True
    for _ in tqdm(range(max(1, stable_segments // chunk)), desc=f"{stable_segments} random segments", leave=False):
        with ctx:
            logits, _, mem = model(torch.randint(vocab_size, (1, chunk * S), generator=g).to(device), mem=mem)
        norms.append(mem.stm.float().norm().item())
        finite = finite and bool(logits.isfinite().all() and mem.stm.isfinite().all()
                                 and all(t.isfinite().all() for t in mem.ltm))
    return dict(segments=mem.n_seg, stm_norm_first=norms[0], stm_norm_min=min(norms), stm_norm_max=max(norms),
                finite=finite)


def table(header, rows):
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def fmt(v):
    return "—" if v is None else f"{v:.4f}"


def loss_row(label, r):
    return [label, *(fmt(v) for v in r["loss_by_segment"]), f"{r['loss']:.4f}"]


def write_atomic(path, write, mode="w"):
    tmp = path + ".tmp"
    with open(tmp, mode, newline="" if mode == "w" else None) as f:
        write(f)
    os.replace(tmp, path)


def machine():
    if cuda:
        return torch.cuda.get_device_name()
    model_name = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            model_name = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), model_name)
    return f"{model_name}, {os.cpu_count()} cores"


def plot(cells, latency, train_cells, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.5))
    for row in ROWS:
        for ax, points, x, y in ((axes[0], cells, "length", "peak_mb"), (axes[1], cells, "length", "state_mb"),
                                 (axes[2], latency, "position", "ms")):
            mine = [p for p in points if p["row"] == row]
            ax.plot([p[x] for p in mine], [p[y] for p in mine], "o-", label=row_label(row))
    for row in {c["row"] for c in train_cells}:
        for r in (False, True):
            mine = [c for c in train_cells if c["row"] == row and c["recompute"] == r]
            axes[3].plot([c["n_seg"] for c in mine], [c["peak_mb"] for c in mine], "o-",
                         label=row_label(row) + (", recompute" if r else ""))
    for ax, title, x in zip(axes, ("peak inference memory (MB)", "Stream state (MB)", "per-token latency (ms)",
                                   "peak training memory (MB)"), ("tokens",) * 3 + ("segments per sample",)):
        ax.set(xscale="log", xlabel=x, title=title, ylim=(0, None))  # from 0: flat looks flat
        ax.legend(fontsize=7)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100), "wb")


def plot_longer(longer, path):
    """Recall accuracy by distance band, a line per sample length (part 4 on a recall checkpoint)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in longer:
        ax.plot(list(r["by_band"]), list(r["by_band"].values()), "o-", label=f"samples of {r['n_seg']} segments")
    ax.set(xlabel="distance from fact to question (segments)", ylabel="exact answers", ylim=(0, 1.02),
           title=f"recall beyond the trained {longer[0]['n_seg'] // longer[0]['times']} segments")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100), "wb")


def goal(name, ok, detail, shape):
    # the goals are about GPT-2-sized shapes: on the tiny one (--quick, a smoke test of the code paths) none is judged
    status = "n/a (tiny shapes)" if shape == "tiny" else "n/a" if ok is None else ("PASS" if ok else "FAIL")
    print(f"- {status}: {name} ({detail})")
    return dict(goal=name, status=status, detail=detail)


if cell:  # a child process: one memory cell
    if cell.startswith("train:"):
        _, row, n, recompute = cell.split(":")
        print(json.dumps(run_train_cell(row, int(n), recompute == "True")))
    else:
        row, _, n = cell.rpartition(":")
        print(json.dumps(run_cell(row, int(n))))
    raise SystemExit(0)


def run_child(name):
    """One memory cell in a fresh process (this script with --cell=name), so its peak is its own."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *args, f"--cell={name}"], capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"memory cell {name} failed:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


t_start = time.time()
ltm_result = ltm_eval() if ckpt else None  # first: a checkpoint or data problem shows at once
todo = [(r, n) for r in ROWS for n in sorted(lengths)]
cells = []
with tqdm(total=sum(n for _, n in todo), desc="memory cells", unit="tok") as bar:
    for row, n in todo:
        bar.set_postfix(cell=f"{row}:{n}")
        cells.append(run_child(f"{row}:{n}"))
        bar.update(n)
latency = run_latency()
training = [train_speed(row) for row in tqdm(ROWS, desc="training speed")]
train_cells = [run_child(f"train:{name}+mem:{n}:{r}") for name in tqdm(names, desc="training memory")
               for n in sorted(train_n_seg) for r in (False, True)]

# ---- report ----
cols, positions = sorted(lengths), sorted(latency_at)
get = {(c["row"], c["length"]): c for c in cells}
lat = {(t["row"], t["position"]): t for t in latency}
print(f"\n# memoGPT bench: {datetime.date.today()}, {machine()}, torch {torch.__version__}, {device}, {dtype}, "
      f"{torch.get_num_threads()} threads\n")
print("Weights are random (seeded): memory and speed do not depend on their values.")
print(f"Tokens reach each length through Stream.feed, {feed_chunk} at a time" +
      (" (model.generate_stream, one by one)." if feed_chunk == 1 else
       " (the Stream's state is the same as after generating them one by one; --feed_chunk=1 generates them)."))
print(f"The baseline's Stream slides its window by half past block_size ({SHAPES[names[0]]['block_size']}): it "
      "recomputes the newer half and forgets the rest, so its state stops growing and so does its context.")
if not cuda:
    print("Peak RSS also counts freed memory that malloc keeps for reuse: it creeps up with the tokens processed "
          "even where the state is constant.")
peak_what = "torch.cuda.max_memory_allocated" if cuda else "peak RSS of a fresh process"
peak_how = peak_what if cuda else (f"{peak_what}, of which Python and torch take "
                                   f"{statistics.median(c['runtime_mb'] for c in cells):.0f} MB")
for title, value in ((f"Peak inference memory, MB ({peak_how})", lambda c: f"{c['peak_mb']:.0f}"),
                     ("Peak above the loaded model, MB (what reading the tokens adds)",
                      lambda c: f"{c['peak_mb'] - c['loaded_mb']:.0f}"),
                     ("Stream state, MB (Stream.nbytes(): KV cache and memory, exact, device independent)",
                      lambda c: f"{c['state_mb']:.1f}")):
    print(f"\n## {title}\n")
    print(table(["model", *cols], [[row_label(r), *(value(get[r, n]) for n in cols)] for r in ROWS]))
print("\n## The paper's GPU figures, MB (for comparison)\n")
print(table(["model", *PAPER_LENGTHS], [[k, *v] for k, v in PAPER_MEMORY.items()]))
print(f"\n## Per-token latency at position N, ms: median of {latency_tokens} tokens generated one by one, every "
      "position and row in turns (slowest in brackets: for the baseline, its window slide)\n")
print(table(["model", *positions], [[row_label(r), *(f"{lat[r, n]['ms']:.1f} ({lat[r, n]['max_ms']:.0f})"
                                                      for n in positions)] for r in ROWS]))
print(f"\n## Training speed: forward + backward + AdamW step on {batch_size} x T random tokens (memoGPT: "
      f"T/{seg_len} segments, gradients through the memory across all), median of {train_steps} steps after "
      f"{warmup_steps} warm-up\n")
print(table(["model", "params (M)", "T", "tokens/s", "forward s", "backward s", "optimizer s"],
            [[row_label(t["row"]), f"{t['params_m']:.1f}", t["T"], f"{t['tokens_per_s']:.0f}", f"{t['forward_s']:.2f}",
              f"{t['backward_s']:.2f}", f"{t['optimizer_s']:.2f}"] for t in training]))
segs = sorted(train_n_seg)
tm = {(c["row"], c["n_seg"], c["recompute"]): c for c in train_cells}
print(f"\n## Peak training memory, MB ({peak_what}): one step (forward, backward, AdamW) on "
      f"{batch_size} x n_seg segments of {seg_len}, gradients through the memory across all; in brackets, above the "
      "loaded model (gradients, AdamW's moments, activations)\n")


def train_mb(c):
    return f"{c['peak_mb']:.0f} ({c['peak_mb'] - c['loaded_mb']:.0f})"


print(table(["model", *(f"n_seg={n}" for n in segs)],
            [[row_label(name + "+mem") + (", recompute" if r else ""), *(train_mb(tm[name + "+mem", n, r]) for n in segs)]
             for name in names for r in (False, True)]))
if ltm_result:
    r0 = ltm_result["rows"]
    print(f"\n## {ckpt}: val loss by segment (seg_len {ltm_result['seg_len']}, {eval_samples} samples of "
          f"{ltm_result['dataset']}{', answer tokens only' if ltm_result['answer_loss'] else ''}) by LTM size; "
          f"trained with ltm={ltm_result['trained_ltm']}\n")
    reset = [loss_row("memory reset before every segment", ltm_result["reset"])] if ltm_result["reset"] else []
    print(table(["ltm", *range(ltm_result["n_seg"]), "mean"], [loss_row(r["ltm"], r) for r in r0] + reset))
    if ltm_result["reach"]:
        print(f"\n## What the memory carries by reach: at segment k, the loss with the memory reset minus with it "
              f"started empty d segments before (it read segments k-d..k-1; ltm={ltm_result['trained_ltm']}). "
              "A memory that accumulates gains down every column\n")
        print(table(["d", *range(ltm_result["n_seg"])], [[d, *("" if g is None else f"{g:.4f}" for g in gains)]
                                                          for d, gains in ltm_result["reach"].items()]))
    if r0[0]["recall_by_distance"]:
        dist = sorted(r0[0]["recall_by_distance"])
        print("\n## Recall accuracy by distance (segments from fact to question)\n")
        print(table(["ltm", *dist], [[r["ltm"], *(f"{r['recall_by_distance'][d]:.3f}" for d in dist)] for r in r0]))
    if ltm_result["longer"]:
        bands = list(ltm_result["longer"][-1]["by_band"])
        print(f"\n## Recall on longer samples than trained ({ltm_result['n_seg']} segments), by distance band: "
              f"{long_samples} samples made on the fly, mean over each band's distances, ltm as trained\n")
        print(table(["segments", *bands], [[f"{r['n_seg']} ({r['times']}x)", *(f"{r['by_band'][b]:.3f}"
                                            if b in r["by_band"] else "" for b in bands)]
                                          for r in ltm_result["longer"]]))
        st = ltm_result["stable"]
        print(f"\nAfter {st['segments']:,} segments of random tokens: STM norm {st['stm_norm_min']:.2f}.."
              f"{st['stm_norm_max']:.2f} (first reading {st['stm_norm_first']:.2f}); logits, STM and LTM "
              f"{'all finite' if st['finite'] else 'NOT FINITE'}")
else:
    print("\n(part 4, loss by LTM size and recall by distance: pass --ckpt=out_dir/ckpt.pt)")
print("\n## The paper's LTM table (untrained Qwen-1.5B, mem 32, 64-token input): mean loss over 512 / 1024 tokens\n")
print(table(["ltm", "512", "1024"], [[k, *v] for k, v in PAPER_LTM.items()]))

print("\n## Goals\n")
goals = []
for name in names:
    m = name + "+mem"
    a, b = get.get((m, REF)), get[m, cols[-1]]
    goals.append(goal(f"{name}: memoGPT peak memory at {cols[-1]} tokens within 5% of {REF}",
                      abs(b["peak_mb"] / a["peak_mb"] - 1) <= 0.05 if a and cols[-1] > REF else None,
                      f"{b['peak_mb']:.0f} vs {a['peak_mb']:.0f} MB" if a else f"lengths has no {REF}", name))
    a, b = lat.get((m, REF)), lat[m, positions[-1]]
    goals.append(goal(f"{name}: memoGPT per-token latency at {positions[-1]} within 1.2x of {REF}",
                      b["ms"] <= 1.2 * a["ms"] if a and positions[-1] > REF else None,
                      f"{b['ms']:.1f} vs {a['ms']:.1f} ms" if a else f"latency_at has no {REF}", name))
    # S/(S+2M): the extra rows alone (every segment adds M read and M write rows) bound memoGPT's speed at that
    a, b = (next(t for t in training if t["row"] == r) for r in (name, m))
    ratio, bound = b["tokens_per_s"] / a["tokens_per_s"], seg_len / (seg_len + 2 * mem_len)
    goals.append(goal(f"{name}: memoGPT training tokens/s at least 0.95 x S/(S+2M) = {0.95 * bound:.2f}x the plain GPT "
                      f"at T={a['T']}", ratio >= 0.95 * bound,
                      f"{b['tokens_per_s']:.0f} vs {a['tokens_per_s']:.0f} tokens/s = {ratio:.2f}x, "
                      f"{ratio / bound:.2f} of the row bound {bound:.2f}", name))
    a, b = tm.get((m, 1, True)), tm.get((m, 8, True))
    goals.append(goal(f"{name}: memoGPT peak training memory at n_seg=8 with recompute <= 1.5x n_seg=1",
                      b["peak_mb"] <= 1.5 * a["peak_mb"] if a and b else None,
                      f"{b['peak_mb']:.0f} vs {a['peak_mb']:.0f} MB = {b['peak_mb'] / a['peak_mb']:.2f}x" if a and b
                      else "train_n_seg lacks 1 or 8", name))

results = dict(date=str(datetime.date.today()), machine=machine(), torch=torch.__version__, device=device,
               settings=config, random_weights=True, memory=cells, latency=latency, training=training,
               training_memory=train_cells,
               ltm=ltm_result, goals=goals,
               paper=dict(memory=PAPER_MEMORY, lengths=PAPER_LENGTHS, ltm=PAPER_LTM),
               runtime_s=time.time() - t_start)
os.makedirs(out_dir, exist_ok=True)
write_atomic(os.path.join(out_dir, "results.json"), lambda f: json.dump(results, f, indent=1))
fields = ["row", "length", "peak_mb", "loaded_mb", "runtime_mb", "state_mb"]


def write_csv(f):
    w = csv.DictWriter(f, fields)
    w.writeheader()
    w.writerows(cells)


write_atomic(os.path.join(out_dir, "memory.csv"), write_csv)
try:
    plot(cells, latency, train_cells, os.path.join(out_dir, "bench.png"))
    plotted = "bench.png, "
    if ltm_result and ltm_result["longer"]:
        plot_longer(ltm_result["longer"], os.path.join(out_dir, "recall_longer.png"))
        plotted += "recall_longer.png, "
except ImportError:
    plotted = ""
    print("\nmatplotlib is not installed: no plots (pip install matplotlib for bench.png)")
print(f"\nwrote {out_dir}/: {plotted}results.json, memory.csv ({time.time() - t_start:.0f} s)")
