"""lab/eval_ckpt.py's smoke test: `python -m lab.eval_ckpt --quick` on a tiny checkpoint of the train.py format (random
weights) on a small recall set and on a text set writes sane tables; bad input stops with one line before any work."""
import json
import os
import runpy
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch

import prepare
from checkpoint import FORMAT
from model import GPT, GPTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo: scripts run by path
EVAL = os.path.join(ROOT, "lab", "eval_ckpt.py")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One --quick run on a tiny memoGPT checkpoint (random weights, train.py's format) on a recall set."""
    tmp = tmp_path_factory.mktemp("eval_ckpt")
    meta = prepare.prepare(dataset="recall", data_dir=str(tmp / "data"), n_facts=7, n_train=64, n_val=64)
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=128, mem_len=4, ltm=2, seg_len=16)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**args))
    torch.save(dict(format=FORMAT, model=model.state_dict(), model_args=asdict(model.config), meta=meta,
                    config=dict(dataset="recall", seg_len=16, n_seg=meta["n_seg"], answer_loss=False)),
               tmp / "ckpt.pt")
    proc = subprocess.run([sys.executable, "-m", "lab.eval_ckpt", "--quick", "--ckpt=ckpt.pt", "--out_dir=out"],
                          cwd=tmp, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp / "out" / "eval_ckpt.json") as f:
        return proc.stdout, json.load(f), tmp


def test_ltm_table(quick):
    stdout, results, tmp = quick
    by_ltm = {r["ltm"]: r["loss_by_segment"] for r in results["rows"]}
    assert list(by_ltm) == [0, 1, 2] and all(len(v) == 8 for v in by_ltm.values())
    # the same weights with K snapshots: segment 0 reads no LTM, segment 1 reads one snapshot (K >= 1), so
    # K=1 and K=2 part only from segment 2 on
    assert by_ltm[0][0] == by_ltm[1][0] == by_ltm[2][0]
    assert by_ltm[1][1] == by_ltm[2][1] != by_ltm[0][1]
    assert by_ltm[1][2] != by_ltm[2][2]
    for r in results["rows"]:
        assert sorted(map(int, r["recall_by_distance"])) == list(range(1, 8))
        assert all(0 <= a <= 1 for a in r["recall_by_distance"].values())
    # samples 2x and 4x the trained 8 segments, made on the fly: distances 1-7 as trained, then 8-15, 16-31
    longer = results["longer"]
    assert [(r["times"], r["n_seg"], list(r["by_band"])) for r in longer] == [
        (2, 16, ["1-7", "8-15"]), (4, 32, ["1-7", "8-15", "16-31"])]
    assert all(0 <= a <= 1 for r in longer for a in r["by_band"].values())
    stable = results["stable"]
    assert stable["segments"] == 100 and stable["finite"]
    assert 0 < stable["stm_norm_min"] <= stable["stm_norm_first"] <= stable["stm_norm_max"]
    assert results["ckpt"] == "ckpt.pt" and results["settings"]["ltm_sizes"] == [0, 1, 2]
    assert "| ltm | 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | mean |" in stdout
    assert "## Recall accuracy by distance" in stdout and "| 32 (4x) | " in stdout
    assert "| 8 | 4.673 | 5.2161 |" in stdout  # the paper's LTM table beside ours
    assert sorted(os.listdir(tmp / "out")) == ["eval_ckpt.json", "recall_longer.png"]  # no temp file left


def test_evaluate_checkpoint_is_importable(quick, monkeypatch):
    """A script that holds the model gets the same result dict from evaluate_checkpoint as the command line."""
    _, results, tmp = quick
    monkeypatch.chdir(tmp)
    from lab import eval_ckpt
    model, ck, meta, val = eval_ckpt.load("ckpt.pt", "cpu")
    r = eval_ckpt.evaluate_checkpoint(model, ck, meta, val, dict(eval_ckpt.QUICK, longer=(), stable_segments=10))
    assert [row["loss_by_segment"] for row in r["rows"]] == [row["loss_by_segment"] for row in results["rows"]]
    assert r["longer"] == [] and r["stable"]["segments"] == 10 and r["reset"] is None


def test_checkpoint_of_other_data_stops(quick, monkeypatch):
    """data/ is found from the working directory: data of another vocabulary must not be scored silently."""
    tmp = quick[2]
    ck = torch.load(tmp / "ckpt.pt", weights_only=False)
    ck["meta"] = {**ck["meta"], "vocab_size": ck["meta"]["vocab_size"] - 16}
    torch.save(ck, tmp / "other.pt")
    monkeypatch.chdir(tmp)
    monkeypatch.setattr(sys, "argv", ["eval_ckpt.py", "--quick", "--ckpt=other.pt", "--out_dir=other"])
    with pytest.raises(SystemExit, match="is not the data other.pt was trained on") as e:
        runpy.run_path(EVAL, run_name="__main__")
    assert "\n" not in str(e.value) and not (tmp / "other").exists()


def test_unreadable_checkpoint_stops_with_one_line(quick, monkeypatch, tmp_path):
    whole = (quick[2] / "ckpt.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(whole[:len(whole) // 2])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["eval_ckpt.py", "--quick", "--ckpt=truncated.pt", "--out_dir=out"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(EVAL, run_name="__main__")
    message = str(e.value)
    assert message.startswith("truncated.pt is not a readable checkpoint (RuntimeError") and "\n" not in message


@pytest.mark.parametrize("args, message", [(["--ckpt=nowhere.pt"], "no checkpoint at nowhere.pt"),
                                           ([], "python -m lab.eval_ckpt --ckpt="),
                                           (["--ckpt=nowhere.pt", "--ltm_sizes=(-1,)"], "need ltm_sizes"),
                                           (["--ckpt=nowhere.pt", "--eval_batch=0"], "eval_batch"),
                                           (["--ckpt=nowhere.pt", "--ltms=(0, 1)"], "unknown setting 'ltms'")])
def test_bad_input_stops_before_work(monkeypatch, tmp_path, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["eval_ckpt.py", "--quick", *args])
    with pytest.raises(SystemExit, match=message) as e:
        runpy.run_path(EVAL, run_name="__main__")
    assert "\n" not in str(e.value) and not os.listdir(tmp_path)  # one line, nothing written


def test_text_checkpoint_has_a_memory_reset_row(quick, tmp_path, monkeypatch, capsys):
    """A memoGPT on a text set: the LTM table gets a row with the memory reset before every segment, on the same
    samples (segment 0 reads an empty memory either way); the recall set keeps its accuracy by distance instead."""
    assert quick[1]["reset"] is None and quick[1]["reach"] is None
    (tmp_path / "docs").mkdir()
    for name in ("model.py", "memory.py", "lab/eval_ckpt.py"):
        (tmp_path / "docs" / f"{os.path.basename(name)}.txt").write_text(open(os.path.join(ROOT, name)).read())
    meta = prepare.prepare(dataset="text", input=str(tmp_path / "docs" / "*.txt"), data_dir=str(tmp_path / "data"),
                           tokenizer="bytes", val_fraction=0.5)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=320, mem_len=4, ltm=2, seg_len=16))
    torch.save(dict(format=FORMAT, model=model.state_dict(), model_args=asdict(model.config), meta=meta,
                    config=dict(dataset="text", seg_len=16, n_seg=4, curriculum=())), tmp_path / "ckpt.pt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["eval_ckpt.py", "--quick", "--ckpt=ckpt.pt", "--out_dir=out"])
    runpy.run_path(EVAL, run_name="__main__")
    result = json.loads((tmp_path / "out" / "eval_ckpt.json").read_text())
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
    # a text set: no recall tables, no plot
    assert result["longer"] is None and result["stable"] is None and "Recall" not in out
    assert os.listdir(tmp_path / "out") == ["eval_ckpt.json"]


def test_checkpoint_trained_on_one_segment_warns(quick, monkeypatch, capsys):
    tmp = quick[2]
    ck = torch.load(tmp / "ckpt.pt", weights_only=False)
    ck["config"] = {**ck["config"], "n_seg": 1}
    ck["meta"] = {**ck["meta"], "vocab_size": 0}  # other data: eval_ckpt.py stops right after the warning
    torch.save(ck, tmp / "one.pt")
    monkeypatch.chdir(tmp)
    monkeypatch.setattr(sys, "argv", ["eval_ckpt.py", "--quick", "--ckpt=one.pt", "--out_dir=one"])
    with pytest.raises(SystemExit, match="is not the data one.pt was trained on"):
        runpy.run_path(EVAL, run_name="__main__")
    assert capsys.readouterr().err == ("warning: one.pt was trained on one segment per sample (n_seg=1, no "
                                       "curriculum): its memory was never read in training\n")
