"""Tests for train.py and evaluate.py on a tiny recall set (tiny shapes, CPU, seconds)."""
import json
import math
import os
import re
import runpy
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from configurator import configure
import recall
import training
from checkpoint import load_model
from evaluate import recall_accuracy, segment_loss_sums
from model import GPT, GPTConfig
from prepare import prepare
from training import read_samples

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo: scripts run by path
SEG, NSEG = 8, 3
TINY = ["--dataset=recall", f"--seg_len={SEG}", f"--n_seg={NSEG}", "--n_layer=1", "--n_head=2", "--n_embd=16",
        "--mem_len=2", "--ltm=1", "--batch_size=2", "--eval_iters=2", "--recall_samples=4", "--warmup_iters=1",
        "--lr_decay_iters=6", "--learning_rate=1e-2", "--dropout=0.1", "--answer_loss=True"]


@pytest.fixture
def work(tmp_path, monkeypatch):
    meta = prepare(data_dir=str(tmp_path / "data"), dataset="recall", seg_len=SEG, n_seg=NSEG, n_facts=2, n_keys=4,
                   n_values=4, n_filler=3, n_train=64, n_val=16)
    monkeypatch.chdir(tmp_path)
    return SimpleNamespace(path=tmp_path, meta=meta)


def train(monkeypatch, *args):
    """Run train.py in this process (torch is imported once for all tests)."""
    monkeypatch.setattr(sys, "argv", ["train.py", *TINY, *args])
    runpy.run_path(os.path.join(ROOT, "train.py"), run_name="__main__")


def load(path):
    return torch.load(path, weights_only=True)  # what train.py saves loads safely (checkpoint.load_model does this)


def log(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_unknown_or_mistyped_setting_stops_with_one_line(work, monkeypatch):
    with pytest.raises(SystemExit, match="unknown setting 'n_layr' \\(did you mean --n_layer\\?\\)"):
        train(monkeypatch, "--n_layr=2")
    with pytest.raises(SystemExit, match="max_iters must be int"):
        train(monkeypatch, "--max_iters=lots")
    with pytest.raises(SystemExit, match="--seg_len=8"):
        train(monkeypatch, "--seg_len=16")
    with pytest.raises(SystemExit, match="n_seg >= 2"):
        train(monkeypatch, "--curriculum=(1,)", "--stage_iters=2")
    with pytest.raises(SystemExit, match="needs --stage_iters"):
        train(monkeypatch, "--curriculum=(2,)")


def test_config_file_with_a_syntax_error_is_named(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("n_layer = 2\nn_head = (4\n")
    with pytest.raises(SystemExit) as e:
        configure({"n_layer": 1, "n_head": 1}, [str(bad)])
    assert str(e.value).startswith(f"config file {bad}, line 2: ") and "\n" not in str(e.value)


@pytest.mark.parametrize("arg, message", [
    ("--mem_len=-1", "mem_len (memory slots) and ltm (snapshots) must be >= 0 (0 = none), got mem_len=-1, ltm=1"),
    ("--ltm=-2", "must be >= 0 (0 = none), got mem_len=2, ltm=-2"),
    ("--n_head=3", "n_embd=16 is not a multiple of n_head=3 (each head gets n_embd / n_head dimensions)"),
    ("--batch_size=0", "--batch_size=0: must be >= 1"),
    ("--seg_len=0", "--seg_len=0: must be >= 1"),
    ("--eval_interval=0", "--eval_interval=0: must be >= 1"),
    ("--eval_iters=0", "--eval_iters=0: must be >= 1"),
    ("--gradient_accumulation_steps=0", "--gradient_accumulation_steps=0: must be >= 1"),
    ("--eval_ltm=-1", "--eval_ltm=-1: the LTM snapshots kept at evaluation, an int >= 0, for a model with memory"),
    # ranges: a value that would train wrongly or crash later stops here, naming its flag
    ("--grad_clip=-1", "--grad_clip=-1.0: must be >= 0 (0 = no clipping)"),
    ("--learning_rate=-1", "--learning_rate=-1.0: must be > 0"),
    ("--beta1=1.5", "--beta1=1.5: must be in [0, 1)"),
    ("--pool=content", "--pool=content: parts (a slot starts from its part of the segment) or route"),
    ("--max_iters=-5", "--max_iters=-5: must be >= 0"),
    ("--bptt=-1", "--bptt=-1: must be >= 0"),
    ("--lr_decay_iters=0", "--lr_decay_iters=0: must be >= warmup_iters (1)"),
    ("--curriculum=(0, 2)", "--curriculum=(0, 2): the n_seg of the stages before"),
    ("--dtype=float64", "--dtype=float64: choose float32, bfloat16 or float16"),
    ("--device=tpu", "--device=tpu: choose cpu or cuda"),
    ("--dataset=nosuch", "no dataset at data/nosuch: make it with python prepare.py --dataset=KIND --name=nosuch, "
                         "KIND one of openwebtext, fineweb, text, stdlib, recall"),
])
def test_bad_settings_stop_with_one_line(work, monkeypatch, arg, message):
    with pytest.raises(SystemExit) as e:
        train(monkeypatch, arg, "--out_dir=out")
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not os.path.exists("out")


@pytest.mark.parametrize("threads, set_to", [(0, []), (1, [1])])
def test_threads_setting(work, monkeypatch, threads, set_to):
    """0 keeps torch's default; 1 is for cores shared with other processes."""
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    train(monkeypatch, f"--threads={threads}", "--max_iters=0", "--out_dir=out")
    assert calls == set_to


def test_a_second_set_of_the_same_kind_beside_the_first(work, monkeypatch):
    """prepare.py --name writes data/<name>/ and leaves data/recall/ as it was; train.py --dataset=<name> reads it."""
    default = work.path / "data" / "recall"
    before = {p.name: p.read_bytes() for p in default.iterdir()}
    prepare(data_dir="data", dataset="recall", name="recall_long", seg_len=SEG, n_seg=NSEG + 2, n_facts=2, n_keys=4,
            n_values=4, n_filler=3, n_train=64, n_val=16)
    assert {p.name: p.read_bytes() for p in default.iterdir()} == before
    train(monkeypatch, "--dataset=recall_long", f"--n_seg={NSEG + 2}", "--max_iters=2", "--eval_interval=2",
          "--out_dir=long")
    record = log("long/log.jsonl")[-1]
    assert len(record["val_loss_by_segment"]) == NSEG + 2
    assert max(map(int, record["recall_accuracy"])) > NSEG - 1  # distances data/recall/ does not have


def test_resume_refuses_what_it_cannot_change(work, monkeypatch):
    train(monkeypatch, "--max_iters=2", "--eval_interval=2", "--out_dir=out")
    (work.path / "out" / "ckpt.pt.tmp").write_bytes(b"left by a run killed while saving")
    with pytest.raises(SystemExit) as e:
        train(monkeypatch, "--out_dir=out", "--init_from=resume", "--n_embd=128", "--n_layer=3")
    assert str(e.value) == ("--n_layer=3 --n_embd=128: out/ckpt.pt has n_layer=1, n_embd=16, and --init_from=resume "
                            "keeps the model it loads: drop these settings")
    assert os.path.exists("out/ckpt.pt.tmp")  # a refused run touches nothing in out_dir
    (work.path / "out" / "ckpt.pt").write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        train(monkeypatch, "--out_dir=out", "--init_from=resume")
    assert str(e.value).startswith("out/ckpt.pt is not a readable checkpoint (EOFError") and "\n" not in str(e.value)


def test_the_parts_ablation_trains_resumes_and_keeps_its_pool(work, monkeypatch):
    train(monkeypatch, "--pool=parts", "--max_iters=2", "--eval_interval=2", "--out_dir=out")
    assert load("out/ckpt.pt")["model_args"]["pool"] == "parts"
    train(monkeypatch, "--out_dir=out", "--init_from=resume", "--max_iters=4")  # the checkpoint's pool: parts
    assert log("out/log.jsonl")[-1]["iter"] == 4
    with pytest.raises(SystemExit, match="--pool=route: out/ckpt.pt has pool=parts"):
        train(monkeypatch, "--out_dir=out", "--init_from=resume", "--pool=route")
    ckpt = load("out/ckpt.pt")  # written before the pool setting: no pool in model_args, and the parts it held
    del ckpt["model_args"]["pool"]
    torch.save(ckpt, "out/ckpt.pt")
    assert load_model("out/ckpt.pt")[0].config.pool == "parts"


def test_a_routed_checkpoint_from_before_the_null_query_and_allocation_loads_as_it_was(work, monkeypatch):
    """A pool=route checkpoint written before route_null_query and route_alloc has no null query: it loads with the
    null a logit alone and no slot closed, as it was trained (its weights fit that model, not the new default's)."""
    train(monkeypatch, "--max_iters=2", "--eval_interval=2", "--out_dir=out")
    ckpt = load("out/ckpt.pt")
    assert ckpt["model_args"]["route_null_query"] is True and ckpt["model_args"]["route_alloc"] == 4
    old = GPT(GPTConfig(**{**ckpt["model_args"], "route_null_query": False}))
    del ckpt["model_args"]["route_null_query"], ckpt["model_args"]["route_alloc"]
    ckpt["model"] = old.state_dict()
    torch.save(ckpt, "out/ckpt.pt")
    model = load_model("out/ckpt.pt")[0]
    assert not model.config.route_null_query and not hasattr(model, "route_null_q")
    assert model.config.route_alloc == 0


def test_a_checkpoint_of_an_older_model_py_is_refused(work, monkeypatch):
    """A checkpoint from before issue 40's write gate has the same parameters, which this model.py would read as
    another gate: train.py's resume (and load_model, which sample.py and lab/eval_ckpt.py use) refuse it in one
    line, not with optimizer.load_state_dict's ValueError or a model that computes something else."""
    from checkpoint import FORMAT
    train(monkeypatch, "--max_iters=2", "--eval_interval=2", "--out_dir=out")
    ck = load("out/ckpt.pt")
    assert ck["format"] == FORMAT
    del ck["format"]  # as written before checkpoints carried their format
    torch.save(ck, "out/ckpt.pt")
    line = ("out/ckpt.pt was written by an older model.py (another memory gate or weight-decay groups, issue 40): it "
            "would be read wrongly; train it again")
    with pytest.raises(SystemExit) as e:
        train(monkeypatch, "--out_dir=out", "--init_from=resume", "--max_iters=4")
    assert str(e.value) == line
    with pytest.raises(ValueError) as e:
        load_model("out/ckpt.pt")
    assert str(e.value) == line


def test_eval_ltm_evaluates_with_another_ltm_size(work, monkeypatch):
    """The same weights with K snapshots (trained with 1): segment 1 reads one snapshot whenever K >= 1, so K=1 and
    K=3 part only from segment 2 on; each record says which K it used."""
    train(monkeypatch, "--max_iters=2", "--eval_interval=2", "--out_dir=out")
    for k in ("None", "0", "3"):
        with pytest.raises(SystemExit) as e:
            train(monkeypatch, "--out_dir=out", "--init_from=resume", "--eval_only=True", f"--eval_ltm={k}")
        assert e.value.code == 0
    trained, as_trained, k0, k3 = log("out/log.jsonl")[-4:]
    assert [r["eval_ltm"] for r in (trained, as_trained, k0, k3)] == [1, 1, 0, 3]
    assert as_trained["val_loss_by_segment"] == trained["val_loss_by_segment"]
    assert k0["val_loss_by_segment"][1] != trained["val_loss_by_segment"][1]
    assert k3["val_loss_by_segment"][1] == trained["val_loss_by_segment"][1]
    assert k3["val_loss_by_segment"][2] != trained["val_loss_by_segment"][2]
    with pytest.raises(SystemExit, match="drop these settings \\(--eval_ltm evaluates it with another LTM size\\)"):
        train(monkeypatch, "--out_dir=out", "--init_from=resume", "--ltm=3")


@pytest.mark.parametrize("ltm_drop", [0.0, 0.5])  # the draws of no LTM resume too
def test_resume_is_exact_across_a_curriculum_stage(work, monkeypatch, ltm_drop):
    common = ["--curriculum=(2,)", "--stage_iters=2", "--eval_interval=2", f"--ltm_drop={ltm_drop}"]
    train(monkeypatch, *common, "--max_iters=4", "--out_dir=straight")
    train(monkeypatch, *common, "--max_iters=2", "--out_dir=split")
    assert load("split/ckpt.pt")["stage"] == 1 and load("split/ckpt.pt")["iter_num"] == 2
    train(monkeypatch, *common, "--max_iters=4", "--out_dir=split", "--init_from=resume")
    assert [r["iter"] for r in log("split/log.jsonl")] == [0, 2, 4]  # the resumed iteration is not logged again
    a, b = load("straight/ckpt.pt"), load("split/ckpt.pt")
    assert a["iter_num"] == b["iter_num"] == 4
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    # the curriculum: 2 segments per sample for 2 iterations, then 3, each evaluation at the n_seg trained just
    # before it (iteration 2 ends the 2-segment stage); answers only, so segment 0 has no loss
    records = log("straight/log.jsonl")
    assert [r["n_seg"] for r in records] == [2, 2, 3]
    assert [len(r["val_loss_by_segment"]) for r in records] == [2, 2, 3]
    assert records[-1]["val_loss_by_segment"][0] is None and all(records[-1]["val_loss_by_segment"][1:])
    assert set(records[-1]["recall_accuracy"]) == {"1", "2"}
    assert [r["train_loss"] for r in records] == [r["train_loss"] for r in log("split/log.jsonl")]


@pytest.mark.parametrize("ltm_drop, sizes", [(0.0, {None}), (0.5, {0, None}), (1.0, {0})])
def test_ltm_drop_reads_a_share_of_iterations_with_no_ltm(work, monkeypatch, ltm_drop, sizes):
    seen, real = [], training.read_samples  # train.py's own reads (evaluate.py imported its read_samples before)
    monkeypatch.setattr(training, "read_samples", lambda *a, **kw: seen.append(kw["ltm_size"]) or real(*a, **kw))
    train(monkeypatch, "--max_iters=12", "--eval_interval=12", "--out_dir=out", f"--ltm_drop={ltm_drop}")
    assert len(seen) == 12 and set(seen) == sizes


def test_a_redirected_log_has_lines_not_a_bar(work, monkeypatch, capsys):
    """stderr is no terminal here: no progress bar (carriage returns), the parameter count on its own line, then a
    line per evaluation."""
    capsys.readouterr()
    train(monkeypatch, "--max_iters=4", "--eval_interval=2", "--out_dir=out")
    out, err = capsys.readouterr()
    assert "\r" not in out + err
    lines = out.splitlines()
    assert re.match(r"\d+\.\d\dM parameters; ", lines[0])
    assert [line.split(":")[0] for line in lines[1:]] == ["iter 0", "iter 2", "iter 4"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(work, monkeypatch):
    train(monkeypatch, "--max_iters=2", "--eval_interval=2", "--out_dir=out")
    good = load("out/ckpt.pt")
    with pytest.raises(SystemExit) as e:
        train(monkeypatch, "--max_iters=6", "--eval_interval=2", "--out_dir=out", "--init_from=resume",
              "--learning_rate=1e30", "--warmup_iters=0", "--grad_clip=0.0")
    assert re.fullmatch(r"iter \d: (training|val) loss is (nan|inf); stopped \(the last good checkpoint out/ckpt.pt is "
                        r"kept\)\. Lower learning_rate or raise warmup_iters", str(e.value))  # float32: no dtype advice
    kept = load("out/ckpt.pt")
    assert kept["iter_num"] == 2
    for k, v in good["model"].items():
        assert torch.equal(v, kept["model"][k]), k


def run_train(*args, nproc=1):
    """train.py in a subprocess; under torchrun with nproc processes (gloo on CPU) when nproc > 1."""
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *launch, os.path.join(ROOT, "train.py"), *TINY, "--device=cpu", *args],
                          env=env, capture_output=True, text=True, timeout=300)


def test_ddp_two_processes_equal_one_with_twice_the_accumulation(work):
    common = ["--max_iters=3", "--eval_interval=3", "--dropout=0.0", "--gradient_accumulation_steps=2"]
    run_train(*common, "--out_dir=ddp", nproc=2).check_returncode()
    run_train(*common, "--out_dir=one").check_returncode()
    a, b = load("ddp/ckpt.pt"), load("one/ckpt.pt")
    for k, v in a["model"].items():
        torch.testing.assert_close(v, b["model"][k], rtol=0, atol=1e-6, msg=k)
    la, lb = log("ddp/log.jsonl"), log("one/log.jsonl")
    assert math.isclose(la[-1]["train_loss"], lb[-1]["train_loss"], rel_tol=1e-5)
    assert la[-1]["val_loss"] != la[0]["val_loss"]  # it did train


def test_ddp_stops_every_process_on_the_masters_nan_val_loss(work):
    """Only the master evaluates; the other process must stop with it, not fail on a closed connection."""
    run = run_train("--max_iters=6", "--eval_interval=1", "--gradient_accumulation_steps=2", "--learning_rate=1e30",
                    "--warmup_iters=0", "--grad_clip=0.0", "--out_dir=nan", nproc=2)
    assert run.returncode != 0
    assert run.stderr.count("iter 1: val loss is nan; stopped (no checkpoint saved)") == 1
    assert "[rank1]" not in run.stderr.replace("[rank1]:[W", "")  # rank 1 raised nothing (warnings aside)


class Oracle(torch.nn.Module):
    """A 'model' with controlled logits: the true next token in segment 1, value_ids[0] everywhere else."""

    def __init__(self, meta):
        super().__init__()
        self.config = SimpleNamespace(mem_len=1)
        self.vocab, self.guess = meta["vocab_size"], meta["value_ids"][0]

    def forward(self, idx, targets=None, mem=None, **kw):  # read_samples' bptt, ltm_size, ...: ignored
        nxt = torch.cat((idx[:, 1:], idx[:, :1]), dim=1)
        pick = torch.full_like(idx, self.guess)
        pick[:, SEG:2 * SEG] = nxt[:, SEG:2 * SEG]
        return torch.nn.functional.one_hot(pick, self.vocab).float() * 10, None, None


class RecallOracle(Oracle):
    """A perfect memory in segment 1 only: after a key there, the value the key had in segment 0 (its answer is
    hidden from the input); value_ids[0] everywhere else."""

    def forward(self, idx, targets=None, mem=None, **kw):  # read_samples' bptt, ltm_size, ...: ignored
        pick = torch.full_like(idx, self.guess)
        for t in range(SEG, 2 * SEG):
            seen = idx[:, :SEG - 1] == idx[:, t:t + 1]  # the key's place in segment 0, if any
            pick[:, t] = torch.where(seen.any(1), idx[:, 1:SEG].gather(1, seen.int().argmax(1, keepdim=True))[:, 0],
                                     pick[:, t])
        return torch.nn.functional.one_hot(pick, self.vocab).float() * 10, None, None


def test_recall_accuracy_by_distance_on_controlled_logits(work):
    data = np.memmap("data/recall/val_000.bin", dtype=np.uint16, mode="r")
    acc = recall_accuracy(RecallOracle(work.meta), data, work.meta, n_samples=10, batch_size=4, device="cpu")
    rows = data[:10 * NSEG * SEG].reshape(10, -1).astype(np.int64)
    _, y = recall.sample_xy(rows, work.meta)
    answers_at_2 = y[:, 2 * SEG - 1:3 * SEG - 1][y[:, 2 * SEG - 1:3 * SEG - 1] != -1]
    assert acc == {1: 1.0, 2: pytest.approx(np.mean(answers_at_2 == work.meta["value_ids"][0]))}


@pytest.mark.parametrize("mem_len", [2, 0])
def test_a_batch_without_answers_has_zero_loss(mem_len):
    """A curriculum stage can cut every sample of a batch before its question: loss 0, not nan."""
    model = GPT(GPTConfig(block_size=SEG, vocab_size=16, n_layer=1, n_head=2, n_embd=8, mem_len=mem_len, seg_len=SEG))
    x = torch.randint(0, 16, (2, 2 * SEG))
    _, loss = read_samples(model, x, torch.full_like(x, -1), SEG)
    loss.backward()
    assert loss.item() == 0 and all(p.grad is None or not p.grad.any() for p in model.parameters())
    y = torch.full_like(x, -1)
    y[:, -1] = 3
    assert read_samples(model, x, y, SEG)[1].item() > 0


def test_per_segment_loss_is_a_list_by_segment_index(work):
    x = torch.randint(0, work.meta["value_ids"][0], (3, NSEG * SEG))  # never the oracle's guess
    y = torch.cat((x[:, 1:], x[:, :1]), dim=1)
    y[:, -SEG:] = -1  # no targets in the last segment
    sums, counts = segment_loss_sums(Oracle(work.meta), x, y, SEG)
    losses = (sums / counts).tolist()  # nan where a segment has no targets
    wrong = math.log(work.meta["vocab_size"] - 1 + math.exp(10))  # loss of a wrong guess, logit 10 vs 0
    assert losses[0] == pytest.approx(wrong, rel=1e-5)
    assert losses[1] == pytest.approx(math.log(1 + (work.meta["vocab_size"] - 1) * math.exp(-10)), abs=1e-6)
    assert math.isnan(losses[2])


def test_plain_gpt_baseline_trains_and_evaluates(work, monkeypatch):
    train(monkeypatch, "--mem_len=0", "--max_iters=2", "--eval_interval=2", "--out_dir=gpt")
    records = log("gpt/log.jsonl")
    assert len(records[-1]["val_loss_by_segment"]) == NSEG and set(records[-1]["recall_accuracy"]) == {"1", "2"}
    assert load("gpt/ckpt.pt")["model_args"]["mem_len"] == 0


def test_plain_gpt_reads_each_segment_as_its_own_window(work):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=SEG, vocab_size=16, seg_len=SEG)).eval()
    x = torch.randint(0, 16, (1, NSEG * SEG))
    x2 = x.clone()
    x2[0, 0] = (x[0, 0] + 1) % 16
    a, _ = read_samples(model, x, None, SEG)
    b, _ = read_samples(model, x2, None, SEG)
    assert not torch.equal(a[:, :SEG], b[:, :SEG]) and torch.equal(a[:, SEG:], b[:, SEG:])


@pytest.fixture
def stdlib(tmp_path, monkeypatch):
    """A stand-in for the standard library (this project's own sources) in data/stdlib as bytes, config/stdlib.py's
    data; val is the first of the four files, memory.py."""
    root = tmp_path / "lib"
    root.mkdir()
    for name in ("memory.py", "model.py", "prepare.py", "train.py"):
        (root / name).write_text(open(os.path.join(ROOT, name)).read())
    meta = prepare(data_dir=str(tmp_path / "data"), dataset="stdlib", input=str(root), tokenizer="bytes",
                   val_fraction=0.25)
    monkeypatch.chdir(tmp_path)
    return meta


TEXT = ["--dataset=stdlib", "--seg_len=8", "--n_layer=1", "--n_head=2", "--n_embd=16", "--batch_size=2",
        "--eval_iters=2", "--warmup_iters=1", "--max_iters=8", "--eval_interval=8"]


def train_text(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["train.py", *TEXT, *args])
    runpy.run_path(os.path.join(ROOT, "train.py"), run_name="__main__")


def test_memogpt_without_n_seg_reads_its_memory_in_training(stdlib, monkeypatch, capsys):
    """`train.py --mem_len=.. --ltm=..` trains across segments (2 for a quarter of the run, then 4) and says so in
    one line; a resume chooses the same from the checkpoint's memory; the plain GPT keeps one segment per sample."""
    capsys.readouterr()
    train_text(monkeypatch, "--mem_len=2", "--ltm=1", "--out_dir=memo")
    assert capsys.readouterr().out.splitlines()[0] == (
        "memoGPT without --n_seg: 2 -> 4 segments per sample, 2 iterations per stage before the last (--n_seg, "
        "--curriculum and --stage_iters choose others)")
    ck = load("memo/ckpt.pt")
    assert (ck["config"]["n_seg"], ck["config"]["curriculum"], ck["config"]["stage_iters"]) == (4, (2,), 2)
    with pytest.raises(SystemExit):
        train_text(monkeypatch, "--out_dir=memo", "--init_from=resume", "--eval_only=True")  # no --mem_len
    records = log("memo/log.jsonl")
    assert [r["n_seg"] for r in records] == [2, 4, 4]
    # the gate: its keep where the content term is zero (init: sigmoid(-2)), and the content term's growth from 0
    assert records[0]["keep_bias"] == [0.1192, 0.1192] and records[0]["gate_norm"] == 0
    assert records[-1]["gate_norm"] > 0 and "keep" not in records[-1]
    capsys.readouterr()
    train_text(monkeypatch, "--mem_len=0", "--out_dir=gpt")
    assert "without --n_seg" not in capsys.readouterr().out
    assert load("gpt/ckpt.pt")["config"]["n_seg"] == 1 and [r["n_seg"] for r in log("gpt/log.jsonl")] == [1, 1]


def test_text_set_evaluation_resets_the_memory_too(stdlib, monkeypatch, capsys):
    """memoGPT on a text set: every evaluation logs and prints the val loss by segment with the memory carried and
    with it reset before every segment, and their difference; segment 0 reads an empty memory either way."""
    capsys.readouterr()
    train_text(monkeypatch, "--mem_len=2", "--ltm=1", "--n_seg=3", "--out_dir=memo")
    printed = capsys.readouterr().out.splitlines()
    for record, line in zip(log("memo/log.jsonl"), printed[1:], strict=True):
        carried, reset, gain = (record[k] for k in ("val_loss_by_segment", "val_loss_by_segment_reset",
                                                    "memory_gain_by_segment"))
        assert len(carried) == len(reset) == len(gain) == 3 and abs(gain[0]) < 1e-4
        assert gain == pytest.approx([r - c for r, c in zip(reset, carried)], abs=2e-4) and gain[1] != 0
        assert f"every segment read alone (memory reset) {reset} (gain {gain})" in line
    train_text(monkeypatch, "--mem_len=0", "--n_seg=3", "--out_dir=gpt")
    assert "memory_gain_by_segment" not in log("gpt/log.jsonl")[-1]


def test_recall_evaluation_keeps_to_accuracy_by_distance(work, monkeypatch):
    train(monkeypatch, "--max_iters=0", "--out_dir=out")
    assert "recall_accuracy" in log("out/log.jsonl")[0] and "memory_gain_by_segment" not in log("out/log.jsonl")[0]


def test_stdlib_config_trains(stdlib, monkeypatch):
    """config/stdlib.py starts and trains on a small data/stdlib of bytes (its schedule shortened)."""
    assert stdlib["tokenizer"] == "bytes" and stdlib["val_docs"] == 1
    monkeypatch.setattr(sys, "argv", ["train.py", os.path.join(ROOT, "config", "stdlib.py"), "--max_iters=3",
                                      "--stage_iters=1", "--eval_interval=3", "--eval_iters=1", "--out_dir=out"])
    runpy.run_path(os.path.join(ROOT, "train.py"), run_name="__main__")
    first, last = log("out/log.jsonl")
    assert (first["n_seg"], last["n_seg"]) == (2, 8) and len(last["memory_gain_by_segment"]) == 8
    assert last["val_loss"] < first["val_loss"] and load("out/ckpt.pt")["model_args"]["vocab_size"] == 320


def test_plain_gpt_with_a_long_window_reads_whole_samples():
    """A plain GPT whose block_size holds the sample reads it whole (a token sees the segments before it);
    carry=False still reads every segment alone."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=NSEG * SEG, vocab_size=16, seg_len=SEG)).eval()
    x = torch.randint(0, 16, (1, NSEG * SEG))
    x2 = x.clone()
    x2[0, 0] = (x[0, 0] + 1) % 16
    with torch.no_grad():
        whole, alone = read_samples(model, x, None, SEG)[0], read_samples(model, x, None, SEG, carry=False)[0]
        torch.testing.assert_close(whole, model(x)[0])
        assert not torch.equal(whole[:, SEG:], read_samples(model, x2, None, SEG)[0][:, SEG:])
        assert torch.equal(alone[:, SEG:], read_samples(model, x2, None, SEG, carry=False)[0][:, SEG:])


def test_a_new_run_never_replaces_a_run(work, monkeypatch):
    """A new run into an out_dir that holds a run stops with one line; --overwrite=True replaces it (checkpoint and
    log); a ckpt.pt that is a directory, and an out_dir that is a file, stop before training."""
    train(monkeypatch, "--max_iters=2", "--eval_interval=2", "--out_dir=out")
    before = (work.path / "out" / "ckpt.pt").read_bytes()
    with pytest.raises(SystemExit) as e:
        train(monkeypatch, "--max_iters=4", "--eval_interval=2", "--out_dir=out")
    assert str(e.value) == ("out holds a run (out/ckpt.pt): resume it with --init_from=resume, choose another "
                            "--out_dir, or replace it with --overwrite=True")
    assert (work.path / "out" / "ckpt.pt").read_bytes() == before
    train(monkeypatch, "--max_iters=4", "--eval_interval=4", "--out_dir=out", "--overwrite=True")
    assert load("out/ckpt.pt")["iter_num"] == 4 and [r["iter"] for r in log("out/log.jsonl")] == [0, 4]
    (work.path / "dirckpt" / "ckpt.pt").mkdir(parents=True)
    (work.path / "afile").write_text("x")
    for args, message in ((["--out_dir=dirckpt", "--overwrite=True"], "dirckpt/ckpt.pt is not a file"),
                          (["--out_dir=dirckpt", "--init_from=resume"], "dirckpt/ckpt.pt is not a file"),
                          (["--out_dir=afile"], "--out_dir=afile: afile is a file, not a directory")):
        with pytest.raises(SystemExit) as e:
            train(monkeypatch, "--max_iters=2", *args)
        assert message in str(e.value) and "\n" not in str(e.value)


def test_a_second_run_on_an_out_dir_stops_while_the_first_lives(work, monkeypatch):
    """out_dir/LOCK holds the owner's PID: a live owner stops a second run with one line naming it; a dead one's
    lock is taken over, and the killed run's temp checkpoint is removed then."""
    os.makedirs("out")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (work.path / "out" / "LOCK").write_text(f"{sleeper.pid} {__import__('socket').gethostname()}\n")
        with pytest.raises(SystemExit) as e:
            train(monkeypatch, "--max_iters=2", "--eval_interval=2", "--out_dir=out")
        assert str(e.value).startswith(f"out is in use by process {sleeper.pid} (out/LOCK): wait for it to end")
    finally:
        sleeper.kill()
        sleeper.wait()
    (work.path / "out" / "ckpt.pt.12345.tmp").write_bytes(b"half a checkpoint")
    train(monkeypatch, "--max_iters=2", "--eval_interval=2", "--out_dir=out")  # the dead process's lock: taken over
    assert sorted(os.listdir("out")) == ["ckpt.pt", "log.jsonl"]  # no temp file, and the lock released


def test_resume_refuses_other_data_and_settings_it_cannot_change(work, monkeypatch):
    """The data a checkpoint was trained on, by fingerprint: the set prepared again with other samples is refused (a
    resume would rewrite the checkpoint's data); so is a model setting given at its default but not the model's."""
    train(monkeypatch, "--max_iters=2", "--eval_interval=2", "--out_dir=out")
    with pytest.raises(SystemExit) as e:
        train(monkeypatch, "--out_dir=out", "--init_from=resume", "--mem_len=0")
    assert str(e.value).startswith("--mem_len=0: out/ckpt.pt has mem_len=2")
    prepare(data_dir="data", dataset="recall", seg_len=SEG, n_seg=NSEG, n_facts=2, n_keys=4, n_values=4, n_filler=3,
            n_train=64, n_val=16, seed=7, force=True)
    with pytest.raises(SystemExit) as e:
        train(monkeypatch, "--out_dir=out", "--init_from=resume", "--max_iters=4")
    assert str(e.value) == ("data/recall is not the data out/ckpt.pt was trained on (fingerprint differ; it trained on "
                            "--dataset=recall): resume on that set as it was, or start a new run in another --out_dir")
    assert load("out/ckpt.pt")["iter_num"] == 2


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "meta.json").write_text("{not json"), "data/recall/meta.json is not readable JSON"),
    (lambda d: (d / "meta.json").write_text(""), "data/recall/meta.json is not readable JSON"),
    (lambda d: (d / "meta.json").write_text('{"tokenizer": "recall"}'), "is not a meta.json prepare.py wrote"),
    (lambda d: (d / "meta.json").write_text(json.dumps({**json.loads((d / "meta.json").read_text()), "shards": {}})),
     "data/recall/meta.json lists no train shards"),
    (lambda d: (d / "train_000.bin").write_bytes((d / "train_000.bin").read_bytes()[:9]),
     "data/recall/train_000.bin holds 9 bytes, meta.json says 1536 tokens (3072 bytes): truncated or damaged"),
    (lambda d: (d / "val_000.bin").unlink(), "data/recall/val_000.bin is missing"),
])
def test_damaged_data_stops_with_one_line(work, monkeypatch, damage, message):
    damage(work.path / "data" / "recall")
    with pytest.raises(SystemExit) as e:
        train(monkeypatch, "--max_iters=2", "--out_dir=out")
    assert message in str(e.value) and "\n" not in str(e.value)
    assert "python prepare.py --dataset=recall --force=True" in str(e.value) and not os.path.exists("out")


def test_a_split_too_short_for_a_sample_stops(tmp_path, monkeypatch):
    """Two short documents (and an empty and a BOM-only one, kept as they are): no sample of 2 x 64 tokens fits,
    one line says so before any training."""
    for name, text in (("a.txt", "short text " * 5), ("b.txt", "more text " * 5), ("c.txt", ""), ("d.txt", "\ufeff")):
        (tmp_path / name).write_text(text, encoding="utf-8")
    meta = prepare(data_dir=str(tmp_path / "data"), dataset="text", input=str(tmp_path / "*.txt"), tokenizer="bytes",
                   val_fraction=0.5)
    assert meta["train_docs"] + meta["val_docs"] == 4
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        train_text(monkeypatch, "--dataset=text", "--seg_len=64", "--n_seg=2", "--out_dir=out")
    assert str(e.value).startswith("the train split of data/text holds 55 tokens, not one sample of 129 tokens")
    assert not os.path.exists("out")


def test_overwrite_keeps_the_old_run_until_the_new_one_saves(work, monkeypatch, capsys):
    """--overwrite=True replaces a run only at the new run's first checkpoint: one that saves nothing (eval_only,
    max_iters=0, a nan loss at its first evaluation) leaves the old checkpoint and log as they were and says so. A
    replacing run killed before that save leaves a log beside them, which the next run removes; killed between the
    checkpoint's rename and the log's, the next run finishes the swap (the checkpoint names its run)."""
    train(monkeypatch, "--max_iters=2", "--eval_interval=2", "--out_dir=out")
    old = {p.name: p.read_bytes() for p in (work.path / "out").iterdir()}
    with pytest.raises(SystemExit, match="--init_from=resume continues the run in out_dir, --overwrite=True replaces"):
        train(monkeypatch, "--out_dir=out", "--init_from=resume", "--overwrite=True")
    for args in (["--eval_only=True"], ["--max_iters=0"]):
        capsys.readouterr()
        try:
            train(monkeypatch, "--out_dir=out", "--overwrite=True", *args)
        except SystemExit as e:
            assert e.code == 0
        assert "nothing saved: the run out held is kept as it was" in capsys.readouterr().out
        assert {p.name: p.read_bytes() for p in (work.path / "out").iterdir()} == old
    with pytest.raises(SystemExit) as e:
        train(monkeypatch, "--out_dir=out", "--overwrite=True", "--max_iters=6", "--eval_interval=1",
              "--learning_rate=1e30", "--warmup_iters=0", "--grad_clip=0.0")
    assert "nothing saved: the run out held is kept as it was" in str(e.value) and "\n" not in str(e.value)
    assert {p.name: p.read_bytes() for p in (work.path / "out").iterdir() if p.name != "LOCK"} == old  # LOCK: atexit
    (work.path / "out" / "log.jsonl.0123456789ab.new").write_text('{"iter": 0}\n')  # killed before its first save
    train(monkeypatch, "--out_dir=out", "--init_from=resume", "--max_iters=4", "--eval_interval=2")
    assert sorted(os.listdir("out")) == ["ckpt.pt", "log.jsonl"]
    assert [r["iter"] for r in log("out/log.jsonl")] == [0, 2, 4]
    run = load("out/ckpt.pt")["run"]  # killed after its checkpoint's rename, before its log's
    (work.path / "out" / f"log.jsonl.{run}.new").write_text('{"iter": 0, "mine": 1}\n{"iter": 4, "mine": 1}\n')
    with pytest.raises(SystemExit):
        train(monkeypatch, "--out_dir=out", "--init_from=resume", "--eval_only=True")
    assert [r.get("mine") for r in log("out/log.jsonl")] == [1, 1, None] and len(os.listdir("out")) == 2


def test_the_log_agrees_with_the_checkpoint_after_a_kill(work, monkeypatch, capsys):
    """A run killed after an evaluation and before its save (or mid-line) logged what its resume logs again: the
    resume keeps the records up to the checkpoint's iteration, so none repeats. A resume with nothing left to train
    says so."""
    train(monkeypatch, "--max_iters=4", "--eval_interval=2", "--out_dir=out")
    with open("out/log.jsonl", "a") as f:
        f.write(json.dumps({**log("out/log.jsonl")[-1], "iter": 6}) + '\n{"iter": 8, "val_lo')
    train(monkeypatch, "--max_iters=8", "--eval_interval=2", "--out_dir=out", "--init_from=resume")
    assert [r["iter"] for r in log("out/log.jsonl")] == [0, 2, 4, 6, 8]
    capsys.readouterr()
    train(monkeypatch, "--max_iters=8", "--out_dir=out", "--init_from=resume")
    assert "out/ckpt.pt is at iteration 8, max_iters=8: nothing to train (raise --max_iters)" in capsys.readouterr().out
    assert [r["iter"] for r in log("out/log.jsonl")] == [0, 2, 4, 6, 8]


@pytest.mark.parametrize("args, message", [
    (["--n_embd=1000000", "--n_head=1"], "this model needs at least "),
    (["--mem_len=100000"], "GiB of attention scores per layer for a batch of 2), this machine's RAM has "),
    (["--seed=-1"], "--seed=-1: a seed, an int from 0 to 2**63 - 1"),
    ([f"--seed={2**64}"], f"--seed={2**64}: a seed, an int from 0 to 2**63 - 1"),
    (["--learning_rate=1e999"], "--learning_rate=inf: must be > 0 and finite"),
])
def test_limits_are_checked_before_any_work(work, monkeypatch, args, message):
    """A model too large for this machine's memory (its shape alone is built to count it) and a seed numpy or torch
    would refuse stop with one line at once, before anything is made."""
    with pytest.raises(SystemExit) as e:
        train(monkeypatch, "--out_dir=out", *args)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not os.path.exists("out")


def test_token_ids_beyond_the_vocabulary_stop_with_one_line(work, monkeypatch):
    """meta.json checks a shard's size only: an id the vocabulary lacks is caught in the val split when it is opened
    (one pass: val is small), in the train split in the batch that draws it, naming the shard."""
    d = work.path / "data" / "recall"
    original = (d / "val_000.bin").read_bytes()
    (d / "val_000.bin").write_bytes(np.full(len(original) // 2, 60000, dtype=np.uint16).tobytes())
    with pytest.raises(SystemExit) as e:
        train(monkeypatch, "--max_iters=2", "--out_dir=out")
    assert str(e.value).startswith(f"data/recall/val_000.bin holds token id 60000, beyond the vocabulary of "
                                   f"{work.meta['vocab_size']} in meta.json: damaged, or another set's: remake the set")
    (d / "val_000.bin").write_bytes(original)
    (d / "train_000.bin").write_bytes(np.full(work.meta["shards"]["train_000.bin"], 60000, dtype=np.uint16).tobytes())
    with pytest.raises(SystemExit) as e:
        train(monkeypatch, "--max_iters=2", "--out_dir=out")
    assert re.fullmatch(r"\S+/data/recall/train_000.bin holds token id 60000, beyond the vocabulary of \d+ in "
                        r"meta.json: damaged, or another set's: remake the set with python prepare.py "
                        r"--dataset=recall --force=True \(and its other settings\)", str(e.value))


def test_a_full_disk_stops_with_one_line_and_keeps_the_checkpoint(work, monkeypatch):
    """Too little room for a checkpoint stops before training; a disk that fills during a save stops with one line
    naming the path (torch.save's RuntimeError traced to its OSError), the last checkpoint kept."""
    import errno
    import shutil
    train(monkeypatch, "--max_iters=2", "--eval_interval=2", "--out_dir=out")
    good = (work.path / "out" / "ckpt.pt").read_bytes()
    real = shutil.disk_usage
    with monkeypatch.context() as m, pytest.raises(SystemExit) as e:
        m.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
        train(monkeypatch, "--max_iters=4", "--eval_interval=2", "--out_dir=out", "--init_from=resume")
    assert re.fullmatch(r"the checkpoint needs about [\d,]+ bytes at out/ckpt.pt, its disk has 1,000 free: free space, "
                        r"or write elsewhere", str(e.value))

    def full(obj, f):
        f.write(b"x" * 100)
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(SystemExit) as e:
        train(monkeypatch, "--max_iters=4", "--eval_interval=2", "--out_dir=out", "--init_from=resume")
    assert re.fullmatch(r"cannot write out/ckpt.pt: the disk is full \([\d,]+ bytes free, more than 100 needed\): free "
                        r"space, or write elsewhere; out/ckpt.pt is as it was", str(e.value))
    assert (work.path / "out" / "ckpt.pt").read_bytes() == good
    assert sorted(os.listdir("out")) == ["LOCK", "ckpt.pt", "log.jsonl"]  # no temp file; the LOCK goes at exit
