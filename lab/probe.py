"""
The fast probe: does the memory learn on every seed? The first max_iters iterations of the quick start
(config/recall.py, its schedule unchanged: the same run, cut short), for many training seeds, a few processes
at a time, then each last checkpoint measured:

    python -m lab.probe                                  # 6 seeds, 2 processes, one thread each: ~20 min, 2 cores
    python -m lab.probe --variant="--learning_rate=3e-3" # the same with train.py settings changed (a rule tried)
    python -m lab.probe --quick                          # tiny runs in a minute: every part runs, nothing judged

On one machine a run is bit for bit the quick start's first max_iters iterations (its log says the same), so
the probe asks of every seed what the full run would show by then. Per seed it prints the first iteration at
which every distance 1-7 reached 0.9 (train.py's evaluations, every 200 iterations on 1000 val samples), the
last checkpoint's recall by distance with the LTM as trained and with none (the STM alone), and its reach on
samples 4x and 16x the trained length (distances 16-31 and 64-127), with the machine's CPU and load. A seed
has learned when every distance 1-7 is >= 0.95 with the LTM as trained (the quick start's goal), here by
max_iters, two thirds of the way. Runs are reused while current (lab/jobs.py), so a probe that was cut
off goes on where it stopped. Writes out_dir/probe.md and probe.json.
"""
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

from common import machine, table, write_atomic
from configurator import at_least, check, configure, seeds_ok, writable_dir
from lab.jobs import ROOT, run_jobs

out_dir = "probe_out"
seeds = (1337, 1, 2, 3, 4, 5)  # training seeds
procs = 2                # processes at a time, one thread each
variant = ""             # train.py settings added to every run, e.g. "--learning_rate=3e-3"; "" = the code as is
max_iters = 2000         # of the quick start's 3000: its stages of 2 and 4 segments (600 each), then 800 of 8
eval_samples = 1000      # val samples of the last checkpoint's recall by distance
long_samples = 128       # samples of each longer length
quick = False
QUICK_TRAIN = ["--stage_iters=10", "--eval_interval=20", "--warmup_iters=5", "--lr_decay_iters=40",
               "--recall_samples=50"]
config, _ = configure(globals(), quick=dict(out_dir="probe_out/quick", seeds=(1337, 1), max_iters=40, eval_samples=50,
                                         long_samples=8))
check(config, {
    "seeds": seeds_ok,
    **{k: at_least(1) for k in ("procs", "max_iters", "eval_samples", "long_samples")},
    "variant": lambda v: all(a.startswith("--") for a in shlex.split(v)) or "train.py settings as --key=value ...",
    "out_dir": writable_dir("output directory"),
})
CODE = ("model.py", "memory.py", "stream.py", "train.py", "training.py", "evaluate.py", "checkpoint.py", "data.py",
        "recall.py", "common.py", "configurator.py", "lab/eval_ckpt.py")
LONGER = (4, 16)
name = lambda s: f"s{s}"
t_start = time.time()
r = subprocess.run([sys.executable, "prepare.py", "--dataset=recall"], cwd=ROOT, capture_output=True, text=True)
if r.returncode:
    raise SystemExit(f"python prepare.py --dataset=recall failed: {r.stderr.strip()[-500:]}")
train = [(name(s), [sys.executable, "train.py", "config/recall.py", f"--seed={s}", f"--max_iters={max_iters}",
                    *(QUICK_TRAIN if quick else []), "--threads=1", f"--out_dir={os.path.join(out_dir, name(s))}",
                    "--overwrite=True", *shlex.split(variant)], "ckpt.pt") for s in seeds]
run_jobs(train, "train", out_dir, procs, CODE)
evals = [(name(s), [sys.executable, "-m", "lab.eval_ckpt", f"--ckpt={os.path.join(out_dir, name(s), 'ckpt.pt')}",
                    f"--out_dir={os.path.join(out_dir, name(s))}", "--threads=1", "--ltm_sizes=(0,2)",
                    f"--eval_samples={eval_samples}", "--eval_batch=100", f"--longer={LONGER}",
                    f"--long_samples={long_samples}", "--stable_segments=100"], "eval_ckpt.json") for s in seeds]
run_jobs(evals, "eval", out_dir, procs, CODE)


def first_at(log, level=0.9):
    """The first iteration at which every distance's recall reached level, or None."""
    return next((r["iter"] for r in log if min(r["recall_accuracy"].values()) >= level), None)


rows, results = [], []
for s in seeds:
    with open(os.path.join(out_dir, name(s), "log.jsonl")) as f:
        log = [json.loads(line) for line in f]
    with open(os.path.join(out_dir, name(s), "eval_ckpt.json")) as f:
        ev = json.load(f)
    by_ltm = {row["ltm"]: row["recall_by_distance"] for row in ev["rows"]}
    trained, alone = by_ltm[ev["trained_ltm"]], by_ltm[0]
    far = {row["times"]: list(row["by_band"].values())[-1] for row in ev["longer"]}
    learned = min(trained.values()) >= 0.95
    results.append(dict(seed=s, first_at_0_9=first_at(log), trained=trained, stm_alone=alone, far=far,
                        learned=learned))
    fmt = lambda acc: " ".join(f"{a:.2f}" for a in acc.values())
    rows.append([s, first_at(log) or "never", fmt(trained), fmt(alone), *(f"{far[k]:.3f}" for k in LONGER),
                 "yes" if learned else "NO"])

n_learned = sum(r["learned"] for r in results)
median = lambda f: statistics.median(f(r) for r in results)
head = (f"Probe {datetime.date.today()}, {machine()}, load {os.getloadavg()[0]:.1f}, variant "
        f"{variant or '(none: the code as is)'}; `python -m lab.probe{' --quick' if quick else ''}"
        f"{f' --variant={shlex.quote(variant)}' if variant else ''}` ({(time.time() - t_start) / 60:.0f} min, "
        f"runs that were current reused): the quick start's first {max_iters} iterations.")
tab = table(["seed", "first iteration, every distance >= 0.9", "d 1-7, LTM as trained", "d 1-7, no LTM (STM alone)",
             "4x: d 16-31", "16x: d 64-127", "learned (>= 0.95 at d 1-7)"], rows)
summary = (f"{n_learned} of {len(seeds)} seeds learned; medians: worst distance with the LTM "
           f"{median(lambda r: min(r['trained'].values())):.3f}, without it "
           f"{median(lambda r: min(r['stm_alone'].values())):.3f}, 4x {median(lambda r: r['far'][4]):.3f}, "
           f"16x {median(lambda r: r['far'][16]):.3f}")
md = "\n".join([head, "", tab, "", summary]) + "\n"
os.makedirs(out_dir, exist_ok=True)
write_atomic(os.path.join(out_dir, "probe.md"), lambda f: f.write(md))
write_atomic(os.path.join(out_dir, "probe.json"), lambda f: json.dump(dict(
    date=str(datetime.date.today()), machine=machine(), load=os.getloadavg()[0], settings=config, seeds=results,
    learned=n_learned, minutes=(time.time() - t_start) / 60), f, indent=1))
print("\n" + md + f"\nwrote {out_dir}/probe.md and probe.json")
