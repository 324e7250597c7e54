"""bench.py's smoke test: `python bench.py --quick` on tiny shapes, with a checkpoint of the train.py format
on a small recall set, writes sane tables; bad input stops with one line before any work."""
import copy
import csv
import json
import os
import runpy
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch

import prepare
from model import GPT, GPTConfig, Stream

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "bench.py")
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
    """One --quick run with a tiny memoGPT checkpoint (random weights, train.py's format) on a recall set."""
    tmp = tmp_path_factory.mktemp("bench")
    meta = prepare.prepare(dataset="recall", data_dir=str(tmp / "data"), n_facts=7, n_train=64, n_val=64)
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=128, mem_len=4, ltm=2, seg_len=16)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**args))
    torch.save(dict(model=model.state_dict(), model_args=asdict(model.config), meta=meta,
                    config=dict(dataset="recall", seg_len=16, n_seg=meta["n_seg"], answer_loss=False)),
               tmp / "ckpt.pt")
    return (*bench(tmp, "--ckpt=ckpt.pt"), tmp)


def test_memory_table(quick):
    _, results, rows, _ = quick
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

def test_ltm_table(quick):
    _, results, _, _ = quick
    by_ltm = {r["ltm"]: r["loss_by_segment"] for r in results["ltm"]["rows"]}
    assert list(by_ltm) == [0, 1, 2] and all(len(v) == 8 for v in by_ltm.values())
    # the same weights with K snapshots: segment 0 reads no LTM, segment 1 reads one snapshot (K >= 1), so
    # K=1 and K=2 part only from segment 2 on
    assert by_ltm[0][0] == by_ltm[1][0] == by_ltm[2][0]
    assert by_ltm[1][1] == by_ltm[2][1] != by_ltm[0][1]
    assert by_ltm[1][2] != by_ltm[2][2]
    for r in results["ltm"]["rows"]:
        assert sorted(map(int, r["recall_by_distance"])) == list(range(1, 8))
        assert all(0 <= a <= 1 for a in r["recall_by_distance"].values())
    # samples 2x and 4x the trained 8 segments, made on the fly: distances 1-7 as trained, then 8-15, 16-31
    longer = results["ltm"]["longer"]
    assert [(r["times"], r["n_seg"], list(r["by_band"])) for r in longer] == [
        (2, 16, ["1-7", "8-15"]), (4, 32, ["1-7", "8-15", "16-31"])]
    assert all(0 <= a <= 1 for r in longer for a in r["by_band"].values())
    stable = results["ltm"]["stable"]
    assert stable["segments"] == 100 and stable["finite"]
    assert 0 < stable["stm_norm_min"] <= stable["stm_norm_first"] <= stable["stm_norm_max"]


def test_generated_state_equals_fed_state(quick, tmp_path):
    """--feed_chunk=1 generates the tokens one by one: the Stream ends in the state the chunks gave."""
    fed = quick[2]
    _, _, generated = bench(tmp_path, "--feed_chunk=1", "--lengths=(64,)", "--latency_at=(64,)", "--train_steps=1",
                            "--warmup_steps=0")
    assert [(r["row"], r["state_mb"]) for r in generated] == [(r["row"], r["state_mb"]) for r in fed
                                                              if r["length"] == "64"]


def test_checkpoint_of_other_data_stops(quick, monkeypatch):
    """data/ is found from the working directory: data of another vocabulary must not be scored silently."""
    tmp = quick[3]
    ck = torch.load(tmp / "ckpt.pt", weights_only=False)
    ck["meta"] = {**ck["meta"], "vocab_size": ck["meta"]["vocab_size"] - 16}
    torch.save(ck, tmp / "other.pt")
    monkeypatch.chdir(tmp)
    monkeypatch.setattr(sys, "argv", ["bench.py", "--quick", "--ckpt=other.pt", "--out_dir=other"])
    with pytest.raises(SystemExit, match="is not the data other.pt was trained on"):
        runpy.run_path(BENCH, run_name="__main__")


def test_unreadable_checkpoint_stops_with_one_line(quick, monkeypatch, tmp_path):
    whole = (quick[3] / "ckpt.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(whole[:len(whole) // 2])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bench.py", "--quick", "--ckpt=truncated.pt", "--out_dir=out"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(BENCH, run_name="__main__")
    assert str(e.value).startswith("truncated.pt is not a readable checkpoint (RuntimeError") and "\n" not in str(e.value)


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
                                          ("--ckpt=nowhere.pt", "no checkpoint at nowhere.pt"),
                                          ("--lengths=(0, 64)", "must be >= 1")])
def test_bad_input_stops_before_work(monkeypatch, tmp_path, arg, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bench.py", "--quick", arg])
    with pytest.raises(SystemExit, match=message):
        runpy.run_path(BENCH, run_name="__main__")
    assert not os.listdir(tmp_path)  # nothing written


def test_capacity_smoke(tmp_path):
    """bench.py --capacity --quick trains a tiny memoGPT and the peer on the same batches and writes the table."""
    pytest.importorskip("recurrent_memory_transformer_pytorch")
    proc = subprocess.run([sys.executable, BENCH, "--capacity", "--quick", "--out_dir=out"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "out" / "capacity.json") as f:
        rows = json.load(f)["rows"]
    assert [(r["kind"], r["mem_len"]) for r in rows] == [("memoGPT", 2), ("peer", 2)]
    assert all(set(r["accuracy"]) == {"1", "2"} and all(0 <= a <= 1 for a in r["accuracy"].values()) for r in rows)
    assert "| memoGPT, 2 memory slots |" in proc.stdout and "| peer, 2 memory tokens |" in proc.stdout


def test_text_checkpoint_has_a_memory_reset_row(quick, tmp_path, monkeypatch, capsys):
    """A memoGPT on a text set: the LTM table gets a row with the memory reset before every segment, on the same
    samples (segment 0 reads an empty memory either way); the recall set keeps its accuracy by distance instead."""
    assert quick[1]["ltm"]["reset"] is None
    (tmp_path / "docs").mkdir()
    for name in ("model.py", "memory.py", "bench.py"):
        (tmp_path / "docs" / f"{name}.txt").write_text(open(os.path.join(HERE, name)).read())
    meta = prepare.prepare(dataset="text", input=str(tmp_path / "docs" / "*.txt"), data_dir=str(tmp_path / "data"),
                           tokenizer="bytes", val_fraction=0.5)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=320, mem_len=4, ltm=2, seg_len=16))
    torch.save(dict(model=model.state_dict(), model_args=asdict(model.config), meta=meta,
                    config=dict(dataset="text", seg_len=16, n_seg=4, curriculum=())), tmp_path / "ckpt.pt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bench.py", "--quick", "--ckpt=ckpt.pt", "--out_dir=out", "--lengths=(64,)",
                                      "--latency_at=(64,)", "--train_steps=1", "--warmup_steps=0"])
    runpy.run_path(BENCH, run_name="__main__")
    result = json.loads((tmp_path / "out" / "results.json").read_text())["ltm"]
    carried, reset = result["rows"][0]["loss_by_segment"], result["reset"]["loss_by_segment"]
    assert len(reset) == 4 and reset[0] == pytest.approx(carried[0], abs=1e-5) and reset[1:] != carried[1:]
    row = "| memory reset before every segment | " + " | ".join(f"{v:.4f}" for v in reset)
    out = capsys.readouterr().out
    assert row + f" | {result['reset']['loss']:.4f} |" in out
    # by reach: from d segments back; the longest reach at each segment is the memory carried from segment 0
    reach = {int(d): g for d, g in result["reach"].items()}
    carried = next(r for r in result["rows"] if r["ltm"] == 2)["loss_by_segment"]  # as trained
    assert sorted(reach) == [1, 2, 3] and [g is None for g in reach[2]] == [True, True, False, False]
    for k in (1, 2, 3):
        assert reach[k][k] == pytest.approx(reset[k] - carried[k], abs=1e-5)
    assert reach[1][3] != reach[3][3]  # what segment 0 wrote reaches segment 3
    assert "| 3 |  |  |  | " + f"{reach[3][3]:.4f} |" in out


def test_checkpoint_trained_on_one_segment_warns(quick, monkeypatch, capsys):
    tmp = quick[3]
    ck = torch.load(tmp / "ckpt.pt", weights_only=False)
    ck["config"] = {**ck["config"], "n_seg": 1}
    ck["meta"] = {**ck["meta"], "vocab_size": 0}  # other data: bench.py stops right after the warning
    torch.save(ck, tmp / "one.pt")
    monkeypatch.chdir(tmp)
    monkeypatch.setattr(sys, "argv", ["bench.py", "--quick", "--ckpt=one.pt", "--out_dir=one"])
    with pytest.raises(SystemExit, match="is not the data one.pt was trained on"):
        runpy.run_path(BENCH, run_name="__main__")
    assert capsys.readouterr().err == ("warning: one.pt was trained on one segment per sample (n_seg=1, no curriculum): "
                                       "its memory was never read in training\n")
