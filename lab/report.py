"""
The memory report: every memory claim README and RESULTS.md make, re-measured on the current code,
each figure beside its goal with PASS or FAIL.

    python -m lab.report               # trains what is not current, then measures (~1.5 hours on 2 cores)
    python -m lab.report --procs=1     # one process at a time: a one-core or shared machine (twice as long)
    python -m lab.report --quick       # tiny runs in minutes: every part runs, no goal is judged

Runs, each train.py (or lab/capacity.py) into out_dir/<run>/, procs processes at a time, one thread each:

    recall-s1337, -s1, -s2   config/recall.py, the quick start, 3 seeds
    facts                    config/recall_facts.py, 4 facts at once
    stdlib-s1337, -s1, -s2   config/stdlib.py, real text as bytes, 3 seeds
    capacity                 lab/capacity.py, memoGPT 8 slots, clustered facts, seed 1337 (the peer's row: its
                             stored median, lab/peer_capacity.json)

A run is reused when the fingerprint written beside its results matches: a digest of the code that
makes and reads it, its config file, its arguments and torch's version. Any change trains it again.
Figures that vary by seed are the median of the seeds, with their range. Writes out_dir/report.md
(the tables README and RESULTS.md quote) and report.json, with the date, commit, machine and load.
"""
import csv
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from common import machine, table, write_atomic
from configurator import at_least, check, configure, seeds_ok, writable_dir
from lab.jobs import ROOT, run_jobs

out_dir = "report_out"
quick = False            # tiny runs: checks that every part runs (a bare --quick works too)
seeds = (1337, 1, 2)     # training seeds of the runs that vary by seed
procs = 2                # processes at a time, one thread each
eval_samples = 1000      # recall: val samples per distance table; text: val samples (800 for stdlib)
# tiny runs, beside the real report, never over it
config, _ = configure(globals(), quick=dict(out_dir="report_out/quick", seeds=(1337,)))
check(config, {  # every setting, before the hour of work
    "out_dir": writable_dir("output directory"),
    "seeds": seeds_ok,
    "procs": at_least(1),
    "eval_samples": at_least(1),
})

with open(os.path.join(ROOT, "lab", "peer_capacity.json")) as f:  # a stored measurement, with its date
    PEER = {int(n): a for n, a in json.load(f)["accuracy_by_facts"].items()}
# README's controllable-memory example: a fact, then four segments of filler; the question closes a segment
DOC = "k7 v0 " + " ".join(f"f{i}" for i in np.random.default_rng(0).integers(32, size=78))
QUESTION = " ".join(f"f{i}" for i in range(13)) + " ? k7"
CODE = ("model.py", "memory.py", "stream.py", "train.py", "training.py", "evaluate.py", "checkpoint.py", "data.py",
        "recall.py", "common.py", "configurator.py", "prepare.py", "tokenizer.py", "sample.py", "lab/eval_ckpt.py",
        "lab/capacity.py", "lab/attention_map.py")
QUICK_TRAIN = ["--max_iters=40", "--lr_decay_iters=40", "--eval_interval=40", "--stage_iters=10",
               "--warmup_iters=5", "--eval_iters=2", "--recall_samples=50"]


def run_dir(name):
    return os.path.join(out_dir, name)


def jobs_for(stage):
    """(run, command, the file it leaves when done) of a stage: training, then evaluation."""
    py, jobs = [sys.executable], []
    quick_train = QUICK_TRAIN if quick else []
    if stage == "train":
        for s in seeds:
            jobs.append((f"recall-s{s}", py + ["train.py", "config/recall.py", f"--seed={s}"] + quick_train, "ckpt.pt"))
            jobs.append((f"stdlib-s{s}", py + ["train.py", "config/stdlib.py", f"--seed={s}"] + quick_train, "ckpt.pt"))
        jobs.append(("facts", py + ["train.py", "config/recall_facts.py"] + quick_train, "ckpt.pt"))
        jobs.append(("capacity", py + ["-m", "lab.capacity", "--mem_lens=(8,)", "--peer_mem_lens=()", "--ceiling=False",
                                       "--layouts=('clustered',)", "--seeds=(1337,)"]
                     + (["--quick"] if quick else []), "capacity.json"))
        for name, cmd, _ in jobs:
            cmd += [f"--out_dir={run_dir(name)}", "--threads=1"]
            if "train.py" in cmd:  # a run that is not current is this report's own: retrained over its old checkpoint
                cmd.append("--overwrite=True")
        return jobs
    for name in [f"recall-s{s}" for s in seeds] + ["facts"] + [f"stdlib-s{s}" for s in seeds]:
        n = 800 if name.startswith("stdlib") else eval_samples
        cmd = py + ["-m", "lab.eval_ckpt", f"--ckpt={run_dir(name)}/ckpt.pt", f"--out_dir={run_dir(name)}",
                    "--threads=1", f"--eval_samples={n}", "--eval_batch=100"]
        cmd += ["--quick"] if quick else ["--ltm_sizes=(0,)" if name.startswith("stdlib") else "--ltm_sizes=(0,1,2)"]
        jobs.append((name, cmd, "eval_ckpt.json"))
    return jobs


def load(name, file="eval_ckpt.json"):
    with open(os.path.join(run_dir(name), file)) as f:
        return json.load(f)


def median_range(values):
    """Median and range of a figure over seeds, as text."""
    m = statistics.median(values)
    return f"{m:.3f}" if len(values) == 1 else f"{m:.3f} ({min(values):.3f}-{max(values):.3f})"


def verdict(ok):
    return "n/a (quick)" if quick else ("PASS" if ok else "FAIL")


def recall_rows(runs):
    """Recall by distance with the trained LTM and with none, and on longer samples, median over seeds."""
    evals = [load(r) for r in runs]
    trained = evals[0]["trained_ltm"]
    by_ltm = lambda e, k: next(row for row in e["rows"] if row["ltm"] == k)["recall_by_distance"]
    dist = sorted(by_ltm(evals[0], trained), key=int)
    rows, goals = [], []
    for k, goal in ((trained, 0.95), (0, 0.95)):
        per_d = [[by_ltm(e, k)[d] for e in evals] for d in dist]
        worst = min(statistics.median(v) for v in per_d)
        rows.append([f"recall by distance {dist[0]}-{dist[-1]}, ltm={k} at evaluation",
                     *(median_range(v) for v in per_d), f">= {goal} at every distance", verdict(worst >= goal)])
        goals.append(worst >= goal)
    longer = []
    for times, goal in ((2, 0.95), (4, 0.90), (16, 0.80)):
        found = [next((row for row in e["longer"] if row["times"] == times), None) for e in evals]
        if None in found:
            continue
        far = list(found[0]["by_band"])[-1]  # the farthest band: distances of at least half the sample
        values = [row["by_band"][far] for row in found]
        ok = statistics.median(values) >= goal
        longer.append([f"{times}x the trained length ({found[0]['n_seg']} segments)", f"distances {far}",
                       median_range(values), f">= {goal}", verdict(ok)])
        goals.append(ok)
    st = [e["stable"] for e in evals]
    stable = (f"after {st[0]['segments']:,} segments of random tokens: STM norm "
              f"{min(s['stm_norm_min'] for s in st):.2f}-{max(s['stm_norm_max'] for s in st):.2f}, "
              f"{'all finite' if all(s['finite'] for s in st) else 'NOT FINITE'}")
    return dist, rows, longer, stable, goals


def text_rows(runs):
    """On stdlib bytes: carried minus reset by segment, and the reach on segment 7, median over seeds."""
    evals = [load(r) for r in runs]
    gains = [[r - c for r, c in zip(e["reset"]["loss_by_segment"], e["rows"][0]["loss_by_segment"])] for e in evals]
    n_seg = len(gains[0])
    per_seg = [[g[k] for g in gains] for k in range(1, n_seg)]
    low = min(statistics.median(v) for v in per_seg)
    rise = [g[-1] - g[1] for g in gains]
    mean = [e["rows"][0]["loss"] for e in evals]
    reach = [[e["reach"][str(d)][-1] for e in evals] for d in (1, n_seg - 1)]
    rows = [["carried minus reset, nats per byte", *(median_range(v) for v in per_seg), ">= 0.09 on every segment",
             verdict(low >= 0.09)]]
    extra = [["segment 7 minus segment 1", median_range(rise), "> 0 (the gain rises)",
              verdict(statistics.median(rise) > 0)],
             ["segment 7, memory started 1 segment back", median_range(reach[0]), "", ""],
             [f"segment 7, memory started {n_seg - 1} segments back", median_range(reach[1]), "", ""],
             ["mean val loss, memory carried", median_range(mean), "", ""]]
    return n_seg, rows, extra, [low >= 0.09, statistics.median(rise) > 0]


def attention_example(run):
    """README's example: read DOC into memory, save it, then answer QUESTION from the loaded memory, with the
    LTM and without it, and the attention shares of the question's last row."""
    d = run_dir(run)
    with open(os.path.join(d, "doc.txt"), "w") as f:
        f.write(DOC)
    base = [sys.executable, "sample.py", f"--out_dir={d}", "--threads=1"]
    ask = ["--max_new_tokens=1", "--top_k=1", "--num_samples=1", f"--start={QUESTION}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def sample(*extra):
        r = subprocess.run(base + list(extra), cwd=ROOT, env=env, capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"sample.py {' '.join(extra)} failed: {r.stderr.strip()[-500:]}")
        return r.stdout.split("\n---------------")[0].split()[-1] if "---" in r.stdout else ""

    mem = os.path.join(d, "mem.pt")
    if os.path.exists(mem):
        os.remove(mem)  # made anew: the file is this report's, never a user's
    sample(f"--read={d}/doc.txt", f"--save_memory={mem}", "--num_samples=0")
    answers = {"loaded memory": sample(f"--load_memory={mem}", *ask, f"--attention_map={d}/attn.png"),
               "LTM cleared (STM alone)": sample(f"--load_memory={mem}", "--clear_ltm=True", *ask)}
    with open(os.path.join(d, "attn.csv"), newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["token"] == "k7"]
    shares = {r["layer"]: {k: float(v) for k, v in r.items() if k not in ("index", "token", "segment", "layer") and v}
              for r in rows}
    return answers, shares


t_start = time.time()
for cmd in (["prepare.py", "--dataset=recall"],
            ["prepare.py", "--dataset=recall", "--name=recall_facts", "--n_facts=4"],
            ["prepare.py", "--dataset=stdlib", "--tokenizer=bytes"]):
    r = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"python {' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
run_jobs(jobs_for("train"), "train", out_dir, procs, CODE)
run_jobs(jobs_for("eval"), "eval", out_dir, procs, CODE)
answers, shares = attention_example(f"recall-s{seeds[0]}")

recall_runs, text_runs = [f"recall-s{s}" for s in seeds], [f"stdlib-s{s}" for s in seeds]
dist, recall_tab, longer_tab, stable, goals = recall_rows(recall_runs)
n_seg, text_tab, text_extra, text_goals = text_rows(text_runs)
facts = load("facts")
far = {d: a for d, a in next(r for r in facts["rows"] if r["ltm"] == facts["trained_ltm"])["recall_by_distance"].items()
       if int(d) > facts["trained_ltm"]}
facts_acc = statistics.mean(far.values())
cap = load("capacity", "capacity.json")["rows"][0]["accuracy"]
cap_ok = all(cap[str(f)] >= PEER[f] for f in PEER if str(f) in cap)
goals += text_goals + [facts_acc >= 0.90, cap_ok] + [a == "v0" for a in answers.values()]

commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                        text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                       text=True).stdout.strip()
head = (f"Measured {datetime.date.today()} at commit {commit}{' (with uncommitted changes)' if dirty else ''}, "
        f"{machine()}, load {os.getloadavg()[0]:.1f}, {len(seeds)} seed(s) {', '.join(map(str, seeds))}; "
        f"`python -m lab.report{' --quick' if quick else ''}` ({(time.time() - t_start) / 60:.0f} min, checkpoints "
        "that were current reused).")
seeds_note = f"median of {len(seeds)} seeds (range)" if len(seeds) > 1 else "one seed"
md = [f"# Memory report\n\n{head}\n",
      f"## Recall quick start (`python train.py config/recall.py`), {seeds_note}, {eval_samples} val samples\n",
      table(["measure", *dist, "goal", ""], recall_tab), "",
      table(["samples", "band", "exact answers", "goal", ""], longer_tab), "", f"Stability: {stable}.\n",
      "## Four facts at once (`python train.py config/recall_facts.py`), one seed\n",
      table(["measure", *far, "mean", "goal", ""],
            [["exact answers beyond the LTM", *(f"{a:.3f}" for a in far.values()), f"{facts_acc:.3f}", ">= 0.90",
              verdict(facts_acc >= 0.90)]]), "",
      "## Capacity (`python -m lab.capacity`), memoGPT 8 slots, one seed, beside the peer's stored median\n",
      table(["model", *(f"{f} facts" for f in PEER), "goal", ""],
            [["memoGPT, 8 slots", *(f"{cap[str(f)]:.3f}" if str(f) in cap else "" for f in PEER),
              "at or above the peer in every cell", verdict(cap_ok)],
             ["peer RMT, 8 memory tokens (stored, median of 3 seeds)", *(f"{v:.3f}" for v in PEER.values()), "", ""]]),
      "",
      f"## Real text (`python train.py config/stdlib.py`), {seeds_note}, 800 val samples\n",
      table(["measure", *range(1, n_seg), "goal", ""], text_tab), "",
      table(["measure", "value", "goal", ""], text_extra), "",
      "## README's controllable-memory example (quick start checkpoint, first seed)\n",
      table(["memory", "answer", "goal", ""], [[k, v, "v0", verdict(v == "v0")] for k, v in answers.items()]), "",
      "Attention of the answer's row (`k7`), by layer:\n",
      table(["layer", *next(iter(shares.values()))],
            [[layer, *(f"{v:.3f}" for v in share.values())] for layer, share in shares.items()]),
      "", f"**{sum(goals)} of {len(goals)} goals PASS**" if not quick else "(quick: no goal judged)"]
os.makedirs(out_dir, exist_ok=True)
write_atomic(os.path.join(out_dir, "report.md"), lambda f: f.write("\n".join(md) + "\n"))
write_atomic(os.path.join(out_dir, "report.json"), lambda f: json.dump(dict(
    date=str(datetime.date.today()), commit=commit, dirty=bool(dirty), machine=machine(), load=os.getloadavg()[0],
    seeds=seeds, quick=quick, recall=recall_tab, longer=longer_tab, stable=stable, facts=far, capacity=cap, peer=PEER,
    text=text_tab, text_extra=text_extra, answers=answers, shares=shares, goals_pass=sum(goals), goals=len(goals),
    minutes=(time.time() - t_start) / 60), f, indent=1))
print("\n".join(md))
print(f"\nwrote {out_dir}/report.md and report.json")
