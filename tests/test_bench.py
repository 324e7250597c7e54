"""bench.py's smoke test: `python bench.py --quick` on tiny shapes writes sane tables; bad input stops with one
line before any work, and the jobs that moved to their own scripts (--ckpt, --capacity) say where they went."""
import copy
import csv
import json
import os
import runpy
import subprocess
import sys

import pytest
import torch

from model import GPT, GPTConfig
from stream import Stream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo: scripts run by path
BENCH = os.path.join(ROOT, "bench.py")
FIELDS = ["row", "length", "peak_mb", "loaded_mb", "runtime_mb", "state_mb"]


def bench(cwd, *args):
    proc = subprocess.run([sys.executable, BENCH, "--quick", "--out_dir=out", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(cwd, "out", "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(cwd, "out", "memory.csv")) as f:
        rows = list(csv.DictReader(f))
    return proc.stdout, results, rows


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One --quick run (random weights, tiny shapes)."""
    tmp = tmp_path_factory.mktemp("bench")
    return (*bench(tmp), tmp)


def test_memory_table(quick):
    _, results, rows, tmp = quick
    assert list(rows[0]) == FIELDS and len(rows) == 2 * 3  # baseline and memoGPT, lengths 64, 1024, 4096
    cell = {(r["row"], int(r["length"])): {k: float(v) for k, v in r.items() if k != "row"} for r in rows}
    for c in cell.values():
        assert 0 < c["runtime_mb"] < c["loaded_mb"] <= c["peak_mb"]
    # memoGPT: constant state once the LTM is full (K*S = 64 tokens); the peak follows
    assert cell["tiny+mem", 64]["state_mb"] == cell["tiny+mem", 1024]["state_mb"] == cell["tiny+mem", 4096]["state_mb"]
    assert cell["tiny+mem", 4096]["peak_mb"] <= 1.05 * cell["tiny+mem", 1024]["peak_mb"]
    # baseline: the KV cache grows to block_size (128), then the window slides
    assert cell["tiny", 64]["state_mb"] < cell["tiny", 1024]["state_mb"] == cell["tiny", 4096]["state_mb"]
    assert results["memory"][0] == {k: (v if k == "row" else pytest.approx(float(v))) for k, v in rows[0].items()}
    assert results["random_weights"] and results["settings"]["quick"]
    assert "ltm" not in results and "ckpt" not in results["settings"]  # a checkpoint is lab/eval_ckpt.py's job
    assert sorted(os.listdir(tmp / "out")) == ["bench.png", "memory.csv", "results.json"]  # no temp file left


def test_latency_training_and_goals(quick):
    stdout, results, _, _ = quick
    assert sorted((t["row"], t["position"]) for t in results["latency"]) == [
        ("tiny", 1024), ("tiny", 4096), ("tiny+mem", 1024), ("tiny+mem", 4096)]
    assert all(0 < t["ms"] <= t["max_ms"] for t in results["latency"])
    assert [t["row"] for t in results["training"]] == ["tiny", "tiny+mem"]
    assert all(t["tokens_per_s"] > 0 and t["T"] == 128 for t in results["training"])
    # the goals are about GPT-2-sized shapes: on tiny ones none passes or fails
    goals = [line for line in stdout.splitlines() if line.startswith("- n/a (tiny shapes): ")]
    assert len(goals) == len(results["goals"]) == 4 and "FAIL" not in stdout
    assert all(g["status"] == "n/a (tiny shapes)" for g in results["goals"])
    assert "memoGPT peak memory at 4096 tokens within 5% of 1024" in goals[0]
    assert "| GPT-2 Medium | 1416 | 1447 | 1508 | 1629 | 1874 |" in stdout  # the paper's figures beside ours
    assert "python -m lab.eval_ckpt --ckpt=" in stdout  # where the checkpoint tables went
    assert os.path.basename(results["settings"]["out_dir"]) == "out"


def test_training_memory_table(quick):
    """One fresh process per (n_seg, recompute) cell, each peak at least its loaded model; the goal is named."""
    stdout, results, _, _ = quick
    cells = results["training_memory"]
    assert [(c["row"], c["n_seg"], c["recompute"]) for c in cells] == [
        ("tiny+mem", 1, False), ("tiny+mem", 1, True), ("tiny+mem", 2, False), ("tiny+mem", 2, True)]
    assert all(0 < c["loaded_mb"] <= c["peak_mb"] for c in cells)
    assert "| memoGPT, tiny shape (M=8, K=2, S=32), recompute | " in stdout
    assert "peak training memory at n_seg=8 with recompute <= 1.5x n_seg=1" in results["goals"][-1]["goal"]


def test_generated_state_equals_fed_state(quick, tmp_path):
    """--feed_chunk=1 generates the tokens one by one (Stream.generate): the Stream ends in the state the chunks
    gave."""
    fed = quick[2]
    _, _, generated = bench(tmp_path, "--feed_chunk=1", "--lengths=(64,)", "--latency_at=(64,)", "--train_steps=1",
                            "--warmup_steps=0")
    assert [(r["row"], r["state_mb"]) for r in generated] == [(r["row"], r["state_mb"]) for r in fed
                                                              if r["length"] == "64"]


@pytest.mark.parametrize("mem_len", [0, 4])
def test_stream_copy_is_a_snapshot(mem_len):
    """bench.py times latency on copies of one Stream taken at several positions: feeding the Stream on must
    leave a copy as it was (Stream rebinds its state, never changes it in place)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=16, vocab_size=32, mem_len=mem_len, ltm=2,
                          seg_len=8)).eval()
    x = torch.randint(32, (1, 64))
    stream = Stream(model, 1)
    stream.feed(x[:, :20])
    snapshot = copy.copy(stream)
    stream.feed(x[:, 20:])  # past segment ends (memoGPT) and window slides (baseline)
    fresh = Stream(model, 1)
    fresh.feed(x[:, :20])
    torch.testing.assert_close(snapshot.feed(x[:, 20:21]), fresh.feed(x[:, 20:21]), rtol=0, atol=0)


@pytest.mark.parametrize("arg, message", [("--shapes=gpt3", "unknown shape"),
                                          ("--seg_len=512", "seg_len <= block_size"),
                                          ("--lengths=(0, 64)", "must be >= 1"),
                                          ("--ltms=(0, 1)", "unknown setting 'ltms'"),
                                          ("--seed=-1", "--seed=-1: a seed, an int from 0 to 2\\*\\*63 - 1")])
def test_bad_input_stops_before_work(monkeypatch, tmp_path, arg, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bench.py", "--quick", arg])
    with pytest.raises(SystemExit, match=message):
        runpy.run_path(BENCH, run_name="__main__")
    assert not os.listdir(tmp_path)  # nothing written


def test_a_full_disk_stops_before_the_run(monkeypatch, tmp_path):
    """Its results are written at the end: a disk without room for them stops the run before it starts."""
    import shutil
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bench.py", "--quick"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(BENCH, run_name="__main__")
    assert str(e.value) == ("bench.py's results needs about 1,048,576 bytes at bench_out/quick, its disk has 1,000 "
                            "free: free space, or write elsewhere")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("args, unknown", [
    (["--ckpt=x"], "--ckpt=x: unknown setting 'ckpt'"),  # a checkpoint is lab/eval_ckpt.py's
    (["--quick", "--ckpt=out/ckpt.pt", "--eval_samples=8"], "--ckpt=out/ckpt.pt: unknown setting 'ckpt'"),
    (["--capacity"], "--capacity: unknown setting 'capacity'"),  # facts held at once are lab/capacity.py's
    (["--capacity", "--quick"], "--capacity: unknown setting 'capacity'")])
def test_a_setting_bench_does_not_take_stops_with_one_line(tmp_path, args, unknown):
    """bench.py --ckpt and --capacity (jobs of other scripts) stop at once with one line naming the setting."""
    proc = subprocess.run([sys.executable, BENCH, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith(unknown) and proc.stderr.count("\n") == 1
    assert not os.listdir(tmp_path)  # nothing written
