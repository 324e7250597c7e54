"""lab/capacity.py's smoke test: `python -m lab.capacity --quick` trains tiny models on the same batches and writes
the table."""
import csv
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo: scripts run by path
CAPACITY = [sys.executable, "-m", "lab.capacity"]  # from any directory: the repository on the path
ENV = {**os.environ, "PYTHONPATH": ROOT}


def capacity(cwd, *args, out="out"):
    proc = subprocess.run([*CAPACITY, "--quick", *[f"--out_dir={out}"] * (out != "bench_out/quick"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(cwd / out / "capacity.json") as f:
        return proc.stdout, json.load(f)["rows"]


def test_capacity_smoke(tmp_path):
    """capacity.py --quick trains a tiny memoGPT and the peer on the same batches and writes the table."""
    pytest.importorskip("recurrent_memory_transformer_pytorch")
    stdout, rows = capacity(tmp_path)
    kinds = [("memoGPT", 2), ("peer", 2), ("ceiling", 0)]
    assert [(r["layout"], r["kind"], r["mem_len"]) for r in rows] == [(lay, *k) for lay in ("clustered", "scattered",
                                                                                          "restated") for k in kinds]
    assert all(set(r["accuracy"]) == {"1", "2"} and all(0 <= a <= 1 for a in r["accuracy"].values()) for r in rows)
    assert "| memoGPT, 2 memory slots |" in stdout and "| peer, 2 memory tokens |" in stdout
    assert "| in context (plain GPT, one window) |" in stdout and "Facts restated:" in stdout
    with open(tmp_path / "out" / "capacity.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["model", "layout", "mem_len", "facts_1", "facts_2", "stored_1", "stored_2",
                        "facts_per_slot_at_90"] and len(table) == 10


def test_capacity_without_the_peer(tmp_path):
    """--peer_mem_lens=() needs no peer package: memoGPT rows alone. --quick without --out_dir writes to
    bench_out/quick, never over real results in bench_out/."""
    stdout, rows = capacity(tmp_path, "--peer_mem_lens=()", "--ceiling=False", "--layouts=('scattered',)",
                            out="bench_out/quick")
    assert os.listdir(tmp_path / "bench_out") == ["quick"]
    assert [(r["layout"], r["kind"], r["mem_len"]) for r in rows] == [("scattered", "memoGPT", 2)]
    assert "| memoGPT, 2 memory slots |" in stdout and "peer" not in stdout


def test_the_ceiling_alone(tmp_path):
    """--mem_lens=() --peer_mem_lens=(): the in-context row alone, its table and plot."""
    stdout, rows = capacity(tmp_path, "--mem_lens=()", "--peer_mem_lens=()", "--layouts=('clustered',)")
    assert [(r["kind"], r["mem_len"]) for r in rows] == [("ceiling", 0)] and "memoGPT," not in stdout


def test_kept_models_score_again_as_trained(tmp_path):
    """--keep_models=True saves each memoGPT row; --models_from scores them again, untrained, to the same numbers;
    with more allocation rounds (no weights) they load and score; lab.route_diag reads them."""
    rows_of = ["--peer_mem_lens=()", "--ceiling=False", "--layouts=('clustered',)"]
    _, rows = capacity(tmp_path, *rows_of, "--keep_models=True")
    assert os.listdir(tmp_path / "out" / "models") == ["M2_clustered_1337.pt"]
    _, again = capacity(tmp_path, *rows_of, "--models_from=out", out="again")
    assert again[0]["seeds"] == rows[0]["seeds"] and not os.path.exists(tmp_path / "again" / "models")
    _, rounds = capacity(tmp_path, *rows_of, "--models_from=out", "--route_alloc=8", out="rounds")
    assert set(rounds[0]["accuracy"]) == {"1", "2"}
    proc = subprocess.run([sys.executable, "-m", "lab.route_diag", "--model=out/models/M2_clustered_1337.pt",
                           "--n_facts=2", "--samples=4", "--route_alloc=8"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=ENV)
    assert proc.returncode == 0 and "2 facts clustered, 4 samples, 8 rounds" in proc.stdout, proc.stderr[-2000:]
    assert "answers beyond the LTM, by the fact's slot:" in proc.stdout and "by distance: 3 " in proc.stdout


@pytest.mark.parametrize("arg, message", [("--mem_lens=() --peer_mem_lens=() --ceiling=False",
                                           "no rows to train: give --mem_lens, --peer_mem_lens or --ceiling=True"),
                                          ("--mem_lens=(0,)", "--mem_lens=(0,): memoGPT memory slots"),
                                          ("--batch_size=0", "--batch_size=0: must be >= 1"),
                                          ("--device=tpu", "--device=tpu: choose cpu or cuda"),
                                          ("--layouts=('random',)", "--layouts=('random',): a tuple of clustered"),
                                          ("--seeds=()", "--seeds=(): seeds, a tuple of at least one int"),
                                          # 1e999 reads as inf: it trained to nan and wrote tables of chance
                                          ("--learning_rate=1e999", "--learning_rate=inf: must be in (0, 1]"),
                                          ("--n_values=1", "--n_values=1: must be >= 2"),
                                          ("--models_from=x", "--models_from scores kept memoGPT models only"),
                                          ("--models_from=x --peer_mem_lens=() --ceiling=False",
                                           "--models_from=x: no x/models/M2_clustered_1337.pt; keep them with")])
def test_bad_settings_stop_before_work(tmp_path, arg, message):
    proc = subprocess.run([*CAPACITY, "--quick", *arg.split()], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=ENV)
    assert proc.returncode == 1 and proc.stderr == message + proc.stderr[len(message):]
    assert proc.stderr.count("\n") == 1 and not os.listdir(tmp_path)


def test_a_missing_peer_stops_before_work(tmp_path):
    """Without the peer's package, capacity.py stops with one line before the memoGPT rows (hours at full size), not
    at the first peer row."""
    blocked = tmp_path / "blocked" / "recurrent_memory_transformer_pytorch"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('not installed')\n")
    (tmp_path / "work").mkdir()
    proc = subprocess.run([*CAPACITY, "--quick"], cwd=tmp_path / "work", capture_output=True, text=True, timeout=120,
                          env={**ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path / "blocked"), ROOT])})
    assert proc.returncode == 1 and proc.stderr == ("the peer needs pip install recurrent-memory-transformer-pytorch"
                                                    "==0.7.0 (pip install -r requirements-dev.txt), or "
                                                    "--peer_mem_lens=()\n")
    assert not os.listdir(tmp_path / "work")
