"""
Measure what memoGPT claims about cost, with the plain GPT-2 baseline beside it:

 1. peak inference memory while generating N tokens (the paper's table), and the Stream's
    state bytes, which are exact and device independent
 2. per-token latency at positions latency_at, all positions and rows timed in turns in one
    process, so that whatever else runs on the machine slows them alike
 3. training tokens/s, memoGPT against the plain GPT of the same size and total length, and memoGPT's
    peak training memory by segments per sample (train_n_seg), with and without recompute

    python bench.py                          # GPT-2 medium shape, random weights
    python bench.py --quick                  # tiny shapes in seconds (the smoke test)

A trained checkpoint is evaluated by lab/eval_ckpt.py; how many facts the memory holds, by lab/capacity.py.

Every memory cell runs in a fresh process (this script with --cell=ROW:LENGTH, a training one with
--cell=train:ROW:N_SEG:RECOMPUTE) so its peak is its own: peak RSS on CPU, torch.cuda.max_memory_allocated
on CUDA. Results go to out_dir as results.json and memory.csv (and bench.png when matplotlib is installed).
"""
import copy
import csv
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from tqdm import tqdm

from common import autocast, check_disk, machine, table, write_atomic
from configurator import at_least, check, configure, device_ok, dtype_ok, ints_at_least, seed_ok, writable_dir
from model import GPT, GPTConfig
from stream import Stream
from training import optimizer_step, read_samples

out_dir = "bench_out"
quick = False            # tiny shapes, seconds: the smoke test (a bare --quick works too)
shapes = "gpt2-medium"   # comma-separated names in SHAPES: a baseline row and a memoGPT row each
mem_len = 32             # the memoGPT rows' memory
ltm = 4
seg_len = 256
lengths = (64, 128, 256, 512, 1024, 4096, 16384)  # tokens generated per memory cell
feed_chunk = 256         # tokens per Stream.feed call on the way to a cell's length (the same state as
                         # generating them; 1 = generate them one by one with Stream.generate)
latency_at = (1024, 4096, 16384)  # positions at which per-token latency is timed
latency_tokens = 16      # tokens generated one by one, and timed, at each of them
warmup_steps = 1         # training steps not timed
train_steps = 3          # training steps timed per model
train_n_seg = (1, 2, 4, 8)  # training memory: segments per sample (memoGPT), each with and without recompute
batch_size = 1           # training samples per step
device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = "float32"        # float32 like the paper, whose GPT-2 medium figures are about its fp32 weights
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
# a smoke test writes beside real results, never over them (an explicit --out_dir still wins)
QUICK = dict(out_dir="bench_out/quick",
             shapes="tiny", mem_len=8, ltm=2, seg_len=32, lengths=(64, 1024, 4096), feed_chunk=32,
             latency_at=(1024, 4096), latency_tokens=8, train_steps=2, train_n_seg=(1, 2), batch_size=2, threads=1)
# the source paper's GPU figures (MB) at 64/128/256/512/1024 tokens
PAPER_LENGTHS = (64, 128, 256, 512, 1024)
PAPER_MEMORY = {"GPT-2 Medium": (1416, 1447, 1508, 1629, 1874), "GPT-2 Large": (3115, 3162, 3255, 3440, 3811),
                "Llama-3.1-8B-Instruct": (30935, 31222, 31802, 34045, 42128)}

config, _ = configure(globals(), quick=QUICK)
check(config, {
    **{k: at_least(1) for k in ("mem_len", "seg_len", "feed_chunk", "latency_tokens", "train_steps", "batch_size")},
    **{k: at_least(0) for k in ("ltm", "warmup_steps", "threads")},
    **{k: ints_at_least(1, "must be >= 1: a tuple of ints like (1, 2)")
       for k in ("lengths", "latency_at", "train_n_seg")},
    "seed": seed_ok,
    "device": device_ok,
    "dtype": dtype_ok(device),
    "out_dir": writable_dir("output directory"),
})
if not cell:  # before the run, not after it: results.json, memory.csv and bench.png take well under 1 MB
    check_disk(out_dir, 2**20, "bench.py's results")
names = shapes.split(",")
if any(n not in SHAPES for n in names):
    raise SystemExit(f"unknown shape in --shapes={shapes}: choose from {', '.join(SHAPES)}")
if not 0 < seg_len <= min(SHAPES[n]["block_size"] for n in names) or mem_len < 1 or ltm < 0:
    raise SystemExit(f"need mem_len >= 1, ltm >= 0 and 0 < seg_len <= block_size; got mem_len={mem_len}, "
                     f"ltm={ltm}, seg_len={seg_len}")
if threads:
    torch.set_num_threads(threads)
cuda = device.startswith("cuda")
if not cuda and not os.path.exists("/proc/self/clear_refs"):
    raise SystemExit("peak RSS on CPU is read from /proc/self (Linux): run on Linux or on CUDA")
device_type = "cuda" if cuda else "cpu"
ptdtype = getattr(torch, dtype)
ctx = autocast(device_type, dtype)
MB = 2 ** 20
REF = 1024  # the goals compare the longest length (latency: position) with this one
ROWS = [r for n in names for r in (n, n + "+mem")]  # a row: shape, +mem = memoGPT at that shape
FIELDS = ["row", "length", "peak_mb", "loaded_mb", "runtime_mb", "state_mb"]  # memory.csv


def row_label(row):
    shape, memo = row.removesuffix("+mem"), row.endswith("+mem")
    return f"memoGPT, {shape} shape (M={mem_len}, K={ltm}, S={seg_len})" if memo else f"{shape} (KV cache)"


def build(row):
    shape = row.removesuffix("+mem")
    memory_args = dict(mem_len=mem_len, ltm=ltm, seg_len=seg_len) if row.endswith("+mem") else {}
    torch.manual_seed(seed)
    return GPT(GPTConfig(**SHAPES[shape], dropout=0.0, bias=True, **memory_args)).to(device)


def sync():
    if cuda:
        torch.cuda.synchronize()


def process_memory(reset=False):
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
def read(stream, tokens, start, end, bar):
    """Feed tokens[start:end] to the stream, feed_chunk at a time; 1: Stream.generate makes all but the first."""
    if feed_chunk == 1 and end > start:
        for _ in stream.generate(tokens[:, start:start + 1], end - start - 1):
            bar.update(1)
    else:
        for i in range(start, end, feed_chunk):
            stream.feed(tokens[:, i:min(i + feed_chunk, end)])
            bar.update(min(feed_chunk, end - i))
    sync()


def run_cell(row, length):
    """Peak memory of a fresh process that reads `length` tokens into a fresh Stream."""
    runtime, _ = process_memory()
    model = build(row).to(ptdtype).eval()
    loaded, _ = process_memory(reset=True)  # the weights are in; the peak is counted from here
    stream = Stream(model, 1)
    read(stream, tokens_for(model, length), 0, length, tqdm(disable=True))
    (_, peak), state = process_memory(), stream.nbytes()
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
                read(stream, tokens, start, n, bar)
                gens[row, n] = copy.copy(stream).generate(tokens[:, n:n + 1], latency_tokens)
                start = n
    times = {k: [] for k in gens}
    for _ in tqdm(range(latency_tokens), desc="latency: timing", unit="round"):
        for k, gen in gens.items():
            t0 = time.perf_counter()
            next(gen)
            sync()
            times[k].append(1e3 * (time.perf_counter() - t0))
    return [dict(row=row, position=n, ms=statistics.median(t), max_ms=max(t)) for (row, n), t in times.items()]


def timed_step(model, optimizer, scaler, x, y, recompute=False):
    """One training step as train.py takes it, without clipping; returns (forward, backward, optimizer) seconds."""
    t0 = time.perf_counter()
    with ctx:
        _, loss = read_samples(model, x, y, seg_len, recompute=recompute)
    sync()
    t1 = time.perf_counter()
    scaler.scale(loss).backward()
    sync()
    t2 = time.perf_counter()
    optimizer_step(model, optimizer, scaler, 0.0)
    sync()
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def trainer(row):
    model = build(row).train()
    optimizer = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device_type)
    return model, optimizer, torch.amp.GradScaler(device_type, enabled=dtype == "float16")


def random_xy(model, T):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(model.config.vocab_size, (batch_size, T), generator=g).to(device) for _ in range(2))


def run_train_cell(row, n_seg, recompute):
    """Peak memory of a fresh process that takes one training step on samples of n_seg segments: weights,
    gradients, AdamW's moments (made by the step) and the activations the backward pass needs."""
    model, optimizer, scaler = trainer(row)
    loaded, _ = process_memory(reset=True)
    timed_step(model, optimizer, scaler, *random_xy(model, n_seg * seg_len), recompute)
    _, peak = process_memory()
    return dict(row=row, n_seg=n_seg, recompute=recompute, peak_mb=peak / MB, loaded_mb=loaded / MB)


def train_speed(row):
    """Tokens/s of forward + backward + optimizer step at T=block_size, median of train_steps timed steps."""
    model, optimizer, scaler = trainer(row)
    T = model.config.block_size
    step_model = torch.compile(model) if compile else model
    x, y = random_xy(model, T)
    parts = [timed_step(step_model, optimizer, scaler, x, y)  # (forward, backward, optimizer) seconds per step
             for _ in tqdm(range(warmup_steps + train_steps), desc=f"training {row}", leave=False)]
    fwd, bwd, opt = (statistics.median(p[k] for p in parts[warmup_steps:]) for k in range(3))
    return dict(row=row, T=T, tokens_per_s=batch_size * T / (fwd + bwd + opt), forward_s=fwd, backward_s=bwd,
                optimizer_s=opt, params_m=sum(p.numel() for p in model.parameters()) / 1e6)


def run_child(name):
    """One memory cell in a fresh process (this script with --cell=name), so its peak is its own."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *sys.argv[1:], f"--cell={name}"],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"memory cell {name} failed:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train_mb(c):
    return f"{c['peak_mb']:.0f} ({c['peak_mb'] - c['loaded_mb']:.0f})"


def goal(name, ok, detail, shape):
    # the goals are about GPT-2-sized shapes: on the tiny one (--quick, a smoke test of the code paths) none is judged
    status = "n/a (tiny shapes)" if shape == "tiny" else "n/a" if ok is None else ("PASS" if ok else "FAIL")
    print(f"- {status}: {name} ({detail})")
    return dict(goal=name, status=status, detail=detail)


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
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100), binary=True)


def write_csv(f, cells):
    w = csv.DictWriter(f, FIELDS)
    w.writeheader()
    w.writerows(cells)


if cell:  # a child process: one memory cell
    if cell.startswith("train:"):
        _, row, n, recompute = cell.split(":")
        print(json.dumps(run_train_cell(row, int(n), recompute == "True")))
    else:
        row, _, n = cell.rpartition(":")
        print(json.dumps(run_cell(row, int(n))))
    raise SystemExit(0)

t_start = time.time()
todo = [(r, n) for r in ROWS for n in sorted(lengths)]
cells = []
with tqdm(total=sum(n for _, n in todo), desc="memory cells", unit="tok") as bar:
    for row, n in todo:
        bar.set_postfix(cell=f"{row}:{n}")
        cells.append(run_child(f"{row}:{n}"))
        bar.update(n)
# every fresh-process cell before this process loads a model: at GPT-2 medium shape a training cell and a
# parent still holding the latency and training models outgrow a 24 GB machine
train_cells = [run_child(f"train:{name}+mem:{n}:{r}") for name in tqdm(names, desc="training memory")
               for n in sorted(train_n_seg) for r in (False, True)]
latency = run_latency()
training = [train_speed(row) for row in tqdm(ROWS, desc="training speed")]

# ---- report ----
cols, positions, segs = sorted(lengths), sorted(latency_at), sorted(train_n_seg)
get = {(c["row"], c["length"]): c for c in cells}
lat = {(t["row"], t["position"]): t for t in latency}
tm = {(c["row"], c["n_seg"], c["recompute"]): c for c in train_cells}
print(f"\n# memoGPT bench: {datetime.date.today()}, {machine(device)}, torch {torch.__version__}, {device}, {dtype}, "
      f"{torch.get_num_threads()} threads\n")
print("Weights are random (seeded): memory and speed do not depend on their values.")
print(f"Tokens reach each length through Stream.feed, {feed_chunk} at a time" +
      (" (Stream.generate, one by one)." if feed_chunk == 1 else
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
print(f"\n## Peak training memory, MB ({peak_what}): one step (forward, backward, AdamW) on "
      f"{batch_size} x n_seg segments of {seg_len}, gradients through the memory across all; in brackets, above the "
      "loaded model (gradients, AdamW's moments, activations)\n")
print(table(["model", *(f"n_seg={n}" for n in segs)],
            [[row_label(name + "+mem") + (", recompute" if r else ""),
              *(train_mb(tm[name + "+mem", n, r]) for n in segs)] for name in names for r in (False, True)]))
print("\n(a trained checkpoint's loss by LTM size and recall by distance: python -m lab.eval_ckpt "
      "--ckpt=out-recall/ckpt.pt)")

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

results = dict(date=str(datetime.date.today()), machine=machine(device), torch=torch.__version__, device=device,
               settings=config, random_weights=True, memory=cells, latency=latency, training=training,
               training_memory=train_cells, goals=goals, paper=dict(memory=PAPER_MEMORY, lengths=PAPER_LENGTHS),
               runtime_s=time.time() - t_start)
os.makedirs(out_dir, exist_ok=True)
write_atomic(os.path.join(out_dir, "results.json"), lambda f: json.dump(results, f, indent=1))
write_atomic(os.path.join(out_dir, "memory.csv"), lambda f: write_csv(f, cells))
try:
    plot(cells, latency, train_cells, os.path.join(out_dir, "bench.png"))
    plotted = "bench.png, "
except ImportError:
    plotted = ""
    print("\nmatplotlib is not installed: no plots (pip install matplotlib for bench.png)")
print(f"\nwrote {out_dir}/: {plotted}results.json, memory.csv ({time.time() - t_start:.0f} s)")
