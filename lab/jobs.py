"""
Measurement jobs a few processes at a time, each skipped while its results are current (lab/report.py, lab/probe.py).
"""
import hashlib
import os
import subprocess
import time

import torch
from tqdm import tqdm

from common import write_atomic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: jobs run there


def run_jobs(jobs, what, out_dir, procs, code):
    """Run jobs (name, command, the file it leaves when done) in out_dir/<name>/, procs at a time, one thread
    each, skipping those that are current: a job is current when its file exists beside a fingerprint that
    matches a digest of its command, the code files `code`, the config files it names and torch's version (any
    change runs it again). Each job's output goes to out_dir/<name>/<what>.log; a failed job stops with one line
    after the others end."""
    torch_version = torch.__version__.encode()
    todo = []
    for name, cmd, done in jobs:
        digest = hashlib.sha256(" ".join(cmd).encode() + torch_version)
        for f in tuple(code) + tuple(a for a in cmd if a.startswith("config/")):
            with open(os.path.join(ROOT, f), "rb") as fh:
                digest.update(fh.read())
        stamp = os.path.join(out_dir, name, f"{what}.fingerprint")
        if os.path.exists(os.path.join(out_dir, name, done)) and os.path.exists(stamp):
            with open(stamp) as f:
                if f.read() == digest.hexdigest():
                    continue
        todo.append((name, cmd, stamp, digest.hexdigest()))
    print(f"{what}: {len(jobs) - len(todo)} of {len(jobs)} current, {len(todo)} to run", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running, failed = [], []
    with tqdm(total=len(todo), desc=what, unit="run") as bar:
        while todo or running:
            while todo and len(running) < procs:
                name, cmd, stamp, fp = todo.pop(0)
                os.makedirs(os.path.join(out_dir, name), exist_ok=True)
                if os.path.exists(stamp):
                    os.remove(stamp)
                log = open(os.path.join(out_dir, name, f"{what}.log"), "w")
                running.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT),
                                name, stamp, fp, log, time.time()))
            time.sleep(1)
            for job in [j for j in running if j[0].poll() is not None]:
                proc, name, stamp, fp, log, t0 = job
                running.remove(job)
                log.close()
                if proc.returncode:
                    failed.append(name)
                else:
                    write_atomic(stamp, lambda f: f.write(fp))
                bar.write(f"{what} {name}: {'FAILED' if proc.returncode else 'done'} in {time.time() - t0:.0f} s")
                bar.update(1)
    if failed:
        raise SystemExit(f"{what} failed for {', '.join(failed)}: see {out_dir}/<run>/{what}.log")
