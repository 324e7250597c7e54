"""Tests for prepare.py and the recall task (recall.py): offline, on small data the tests write."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

import prepare
import recall
from tokenizer import get_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo: scripts run by path
EOT = "<|endoftext|>"
# unique documents with the awkward cases: empty, unicode, newlines, and the eot text itself (kept as text)
DOCS = [f"doc {i}: " + s for i, s in enumerate(
    ["", "hello world", "héllo wörld ✓ 日本語", "two\nlines\n\n", f"literal {EOT} inside", "  spaces  ", "x" * 3000]
    + [f"the quick brown fox {j} jumps over the lazy dog. " * (j % 7 + 1) for j in range(33)])]


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    """Keep what datasets caches (arrow files, locks) out of the user's HF cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def read_split(out_dir, meta, split):
    names = sorted(n for n in meta["shards"] if n.startswith(split + "_"))
    return np.concatenate([np.memmap(os.path.join(out_dir, n), dtype=np.uint16, mode="r") for n in names])


def split_docs(tokens, eot, decode):
    """tokens -> the documents, each ended by eot."""
    assert len(tokens) and tokens[-1] == eot
    ends = np.flatnonzero(tokens == eot)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [decode(tokens[s:e].tolist()) for s, e in zip(starts, ends)]


def one_line_exit(excinfo):
    msg = str(excinfo.value.code)
    assert msg and "\n" not in msg
    return msg


def check_text_dataset(out_dir, meta, docs, tokenizer="gpt2"):
    encode, decode = get_tokenizer(meta)
    assert meta["tokenizer"] == tokenizer
    assert (meta["vocab_size"], meta["eot"]) == {"gpt2": (50257, 50256), "bytes": (257, 256)}[tokenizer]
    for name, n in meta["shards"].items():  # counts in meta match the files, no temp names left
        assert os.path.getsize(os.path.join(out_dir, name)) == 2 * n
    assert sorted(os.listdir(out_dir)) == sorted(list(meta["shards"]) + ["meta.json"])
    got = {}
    for split in ("train", "val"):
        tokens = read_split(out_dir, meta, split)
        assert len(tokens) == meta[f"{split}_tokens"]
        got[split] = split_docs(tokens, meta["eot"], decode)
        assert decode(tokens.tolist()) == "".join(d + EOT for d in got[split])  # exact round trip
        assert len(got[split]) == meta[f"{split}_docs"]
    assert not set(got["train"]) & set(got["val"])  # split by document, disjoint
    assert sorted(got["train"] + got["val"]) == sorted(docs) and got["val"][0] == docs[0]
    return got


@pytest.mark.parametrize("fmt,streaming,num_proc", [("parquet", True, 1), ("json", False, 2)])
def test_hf_source_end_to_end(tmp_path, fmt, streaming, num_proc):
    """The code path of openwebtext/fineweb, on a local file instead of the hub."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / f"docs.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.table({"text": DOCS, "id": list(range(len(DOCS)))}), path)
    else:
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    meta = prepare.prepare(dataset="openwebtext", data_dir=str(tmp_path / "data"), hf_path=fmt,
                           hf_data_files=str(path), streaming=streaming, num_proc=num_proc,
                           val_fraction=0.1, shard_size=300)  # small shards: documents straddle them
    out_dir = tmp_path / "data" / "openwebtext"
    got = check_text_dataset(out_dir, meta, DOCS)
    assert len(got["val"]) == 4 and len(meta["shards"]) > 4
    assert meta["source"] == {"path": fmt, "name": None, "data_files": str(path)}


def test_sources_are_tried_in_order(tmp_path, monkeypatch, capsys):
    """openwebtext's sources, on local parquet files: the first that opens is read, and said; if none opens,
    one line says what was tried and how to pass another."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = str(tmp_path / "docs.parquet")
    pq.write_table(pa.table({"text": DOCS}), good)
    missing = str(tmp_path / "missing" / "*.parquet")
    monkeypatch.setitem(prepare.SOURCES, "openwebtext", [dict(path="parquet", data_files=missing),
                                                         dict(path="parquet", data_files=good)])
    meta = prepare.prepare(data_dir=str(tmp_path / "data"), val_fraction=0.1, num_proc=1)
    check_text_dataset(tmp_path / "data" / "openwebtext", meta, DOCS)
    assert meta["source"] == {"path": "parquet", "data_files": good}
    assert f"openwebtext: reading {good} ({missing} did not open)\n" in capsys.readouterr().out
    monkeypatch.setitem(prepare.SOURCES, "openwebtext", [dict(path="parquet", data_files=missing),
                                                         dict(path=str(tmp_path / "nowhere"))])
    with pytest.raises(SystemExit) as e:
        prepare.prepare(data_dir=str(tmp_path / "other"))
    msg = one_line_exit(e)
    assert msg.startswith(f"no source of openwebtext opened. Tried: {missing} (ValueError: ")
    assert f"; {tmp_path}/nowhere (FileNotFoundError: " in msg and msg.endswith(
        "Pass another with --hf_path=parquet --hf_data_files='hf://datasets/USER/REPO/data/*.parquet' "
        "(or --hf_path=USER/REPO)")
    assert not (tmp_path / "other" / "openwebtext").exists()


@pytest.mark.parametrize("tokenizer", ["gpt2", "bytes"])
def test_text_files(tmp_path, tokenizer):
    for i, d in enumerate(DOCS[:10]):
        (tmp_path / f"{i:02d}.txt").write_text(d, encoding="utf-8")
    (tmp_path / "skip.md").write_text("not matched")
    meta = prepare.prepare(dataset="text", input=str(tmp_path / "*.txt"), data_dir=str(tmp_path / "data"),
                           val_fraction=0.2, tokenizer=tokenizer)
    got = check_text_dataset(tmp_path / "data" / "text", meta, DOCS[:10], tokenizer)
    assert len(got["val"]) == 2 and meta["source"] == str(tmp_path / "*.txt")
    if tokenizer == "bytes":  # one token per UTF-8 byte, one end-of-text per document
        assert meta["train_tokens"] + meta["val_tokens"] == sum(len(d.encode()) + 1 for d in DOCS[:10])


@pytest.mark.parametrize("tokenizer", ["gpt2", "bytes"])
def test_stdlib_from_a_directory(tmp_path, capsys, tokenizer):
    """--dataset=stdlib on a small stand-in for the standard library: every .py file under --input, those of
    installed packages and files that are not UTF-8 aside, split into train and val by file in sorted order."""
    root = tmp_path / "lib" / "python3.x"
    files = {"abc.py": DOCS[1], "json/__init__.py": DOCS[2], "json/decoder.py": DOCS[3], "os.py": DOCS[4],
             "test/test_json.py": DOCS[6], "test/data/deep.py": DOCS[7], "zipfile.py": DOCS[8],
             "site-packages/numpy/core.py": "installed, not stdlib", "json/dist-packages/x.py": "installed too",
             "README.txt": "not a .py file"}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    (root / "test" / "koi8.py").write_bytes("# привет".encode("koi8-r"))
    meta = prepare.prepare(dataset="stdlib", input=str(root), data_dir=str(tmp_path / "data"), val_fraction=0.25,
                           tokenizer=tokenizer)
    kept = sorted(n for n in files if n.endswith(".py") and "-packages" not in n)
    got = check_text_dataset(tmp_path / "data" / "stdlib", meta, [files[n] for n in kept], tokenizer)
    assert got["val"] == [files[n] for n in kept[::4]]  # the 1st and 5th of the 7 sorted files
    assert got["train"] == [files[n] for i, n in enumerate(kept) if i % 4]
    assert meta["source"] == meta["settings"]["input"] == str(root)
    skipped = f"skipping 1 of 8 files that are not UTF-8 text: {root}/test/koi8.py"
    assert capsys.readouterr().out.splitlines()[0] == skipped


def test_stdlib_defaults_to_this_pythons():
    cfg = prepare.resolve(dict(dataset="stdlib"))
    assert cfg["input"] == sysconfig.get_paths()["stdlib"] and cfg["val_fraction"] == 0.05  # ~90 files of ~1,800
    assert prepare.resolve(dict(dataset="text"))["val_fraction"] == 0.0005
    assert prepare.resolve(dict(dataset="stdlib", val_fraction=0.1))["val_fraction"] == 0.1


@pytest.mark.parametrize("bad_files", ["skip", "stop"])
def test_files_that_are_not_utf8(tmp_path, capsys, bad_files):
    for i, d in enumerate(DOCS[:4]):
        (tmp_path / f"{i}.txt").write_text(d, encoding="utf-8")
    (tmp_path / "koi8.txt").write_bytes("привет".encode("koi8-r"))  # as in CPython's own test/encoded_modules
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    kw = dict(dataset="text", input=str(tmp_path / "*.txt"), data_dir=str(tmp_path / "data"), val_fraction=0.25,
              bad_files=bad_files)
    if bad_files == "stop":
        with pytest.raises(SystemExit) as e:
            prepare.prepare(**kw)
        assert one_line_exit(e) == f"{tmp_path}/koi8.txt is not UTF-8 text: remove it from --input, or pass --bad_files=skip"
        assert not (tmp_path / "data").exists()
        return
    meta = prepare.prepare(**kw)
    check_text_dataset(tmp_path / "data" / "text", meta, DOCS[:4])
    assert capsys.readouterr().out.splitlines()[0] == (f"skipping 2 of 6 files that are not UTF-8 text: "
                                                      f"{tmp_path}/koi8.txt, {tmp_path}/latin1.txt")


def test_max_docs(tmp_path):
    for i, d in enumerate(DOCS[:6]):
        (tmp_path / f"{i}.txt").write_text(d, encoding="utf-8")
    meta = prepare.prepare(dataset="text", input=str(tmp_path / "*.txt"), data_dir=str(tmp_path / "data"),
                           max_docs=3)
    assert meta["train_docs"] + meta["val_docs"] == 3


def recall_samples_of(out_dir, meta, split):
    for name in (n for n in meta["shards"] if n.startswith(split)):
        assert meta["shards"][name] % meta["sample_len"] == 0  # samples never straddle shards
    return read_split(out_dir, meta, split).reshape(-1, meta["sample_len"])


def test_recall_answers_recoverable(tmp_path):
    meta = prepare.prepare(dataset="recall", data_dir=str(tmp_path), n_facts=3, n_train=3000, n_val=200,
                           shard_size=100_000)
    out_dir = tmp_path / "recall"
    S, n_seg, F = meta["seg_len"], meta["n_seg"], meta["n_facts"]
    assert (meta["sample_len"], S, n_seg, F, meta["eot"]) == (128, 16, 8, 3, 0) and meta["tokenizer"] == "recall"
    assert len(meta["value_ids"]) == meta["n_values"] == 16 and len(meta["itos"]) == meta["vocab_size"]
    encode, decode = get_tokenizer(meta)
    assert encode("?") == [meta["question"]]
    assert [meta["itos"][v] for v in meta["value_ids"]] == [f"v{j}" for j in range(16)]
    train = recall_samples_of(out_dir, meta, "train")
    val = recall_samples_of(out_dir, meta, "val")
    assert (len(train), len(val)) == (3000, 200) and len(meta["shards"]) == 5
    assert not np.array_equal(train[:200], val)  # different seeds
    distances = []
    for x in (train, val):
        fact_keys, fact_values = x[:, 0:2 * F:2], x[:, 1:2 * F:2]
        assert all(len(set(row)) == F for row in fact_keys.tolist())  # distinct keys
        rows, q = np.nonzero(x == meta["question"])
        assert (np.bincount(rows) == F).all()  # F questions
        segments = (q // S).reshape(-1, F)
        assert (segments >= 1).all()
        for row, segs in zip(q.reshape(-1, F), segments):  # the questions of a segment close it, back to back
            for s in set(segs.tolist()):
                n = (segs == s).sum()
                assert sorted(row[segs == s] % S) == list(range(S - 3 * n, S, 3))
        keys, answers = x[rows, q + 1].reshape(-1, F), x[rows, q + 2].reshape(-1, F)
        assert (np.sort(keys, 1) == np.sort(fact_keys, 1)).all()  # every fact asked once
        for f in range(F):  # the answer is the value the key had in segment 0
            match = fact_keys == keys[:, f:f + 1]
            assert (match.sum(1) == 1).all() and (answers[:, f] == fact_values[match]).all()
        assert set(answers.ravel().tolist()) <= set(meta["value_ids"])
        distances += segments.ravel().tolist()
    assert set(distances) == set(range(1, n_seg))  # every distance occurs
    assert encode(decode(train[0].tolist())) == train[0].tolist()


def test_recall_inputs_and_targets():
    """recall.xy puts each answer at the prediction before it and hides it in the inputs (no answer can be
    worked out from the others), also in samples cut to fewer segments."""
    cfg = prepare.resolve(dict(dataset="recall", n_facts=2))
    x = recall.samples(50, cfg, np.random.default_rng(0)).astype(np.int64)
    rows = np.concatenate([x, np.full((50, 1), -1)], 1)  # sample_batch's rows: one token more
    meta = dict(question=recall.QUESTION, eot=0)
    inputs, y = recall.xy(rows, meta)
    r, t = np.nonzero(y != -1)
    assert (np.bincount(r) == 2).all() and (x[r, t - 1] == recall.QUESTION).all() and (y[r, t] == x[r, t + 1]).all()
    assert (inputs[r, t + 1] == 0).all()  # the answers are hidden
    keep = np.ones_like(x, dtype=bool)
    keep[r, t + 1] = False
    assert (inputs[keep] == x[keep]).all()  # and nothing else is
    cut_x, cut_y = recall.xy(rows[:, :2 * 16 + 1], meta)  # first 2 segments only
    assert (cut_y == y[:, :2 * 16]).all() and (cut_x == inputs[:, :2 * 16]).all()


def test_recall_questions_share_segments_when_facts_outnumber_them():
    cfg = prepare.resolve(dict(dataset="recall", n_facts=8, n_seg=3, seg_len=16))
    prepare.check_recall(cfg)
    x = recall.samples(200, cfg, np.random.default_rng(0)).astype(np.int64)
    rows, q = np.nonzero(x == recall.QUESTION)
    assert (np.bincount(rows) == 8).all() and set((q // 16).tolist()) == {1, 2}  # 8 questions in 2 segments
    per_segment = np.bincount(rows * 3 + q // 16, minlength=600).reshape(200, 3)
    assert per_segment[:, 1:].max() == 16 // 3 and per_segment[:, 0].max() == 0


def test_recall_layouts_place_the_facts_first_or_scattered():
    """clustered opens segment 0 with "k v k v ..."; scattered puts each fact at its own random even place of
    segment 0, filler between. Either way the questions are the same kind: "? k v" with v the fact's value."""
    cfg = dict(seg_len=32, n_seg=4, n_facts=4, n_keys=16, n_values=8, n_filler=16)
    key0, val0, fil0 = recall.first_ids(cfg)
    for layout in ("clustered", "scattered"):
        x = recall.samples(300, {**cfg, "layout": layout}, np.random.default_rng(0)).astype(np.int64)
        seg0 = x[:, :32]
        r, at = np.nonzero((seg0 >= key0) & (seg0 < val0))  # the keys
        assert (np.bincount(r) == 4).all() and (at % 2 == 0).all()
        assert ((seg0[r, at + 1] >= val0) & (seg0[r, at + 1] < fil0)).all()  # each followed by its value
        rq, q = np.nonzero(x == recall.QUESTION)
        facts = {(i, k): v for i, k, v in zip(r, seg0[r, at], seg0[r, at + 1])}
        assert all(facts[(i, x[i, t + 1])] == x[i, t + 2] for i, t in zip(rq, q))
        first = sorted(set(at.tolist()))
        assert first == [0, 2, 4, 6] if layout == "clustered" else len(first) == 16  # every even place is used
    with pytest.raises(SystemExit, match="layout is clustered or scattered"):
        recall.check({**cfg, "layout": "random"})


def test_restated_facts_are_answered_with_the_newest_value():
    """restate: a fact asked from segment 2 on is stated again with a new value in a segment between, before that
    segment's questions; its answer is the new value. Facts asked in segment 1 keep their first value."""
    cfg = dict(seg_len=32, n_seg=8, n_facts=8, n_keys=16, n_values=8, n_filler=16, restate=True)
    key0, val0, fil0 = recall.first_ids(cfg)
    x = recall.samples(200, cfg, np.random.default_rng(0)).astype(np.int64)
    restated = 0
    for row in x:
        first = dict(zip(row[0:16:2], row[1:16:2]))
        for t in np.nonzero(row == recall.QUESTION)[0]:
            key, answer, s = row[t + 1], row[t + 2], t // 32
            said = [u for u in range(32, t) if row[u] == key and val0 <= row[u + 1] < fil0 and row[u - 1] != 1]
            if s >= 2 and said:
                assert len(said) == 1 and said[0] // 32 < s and answer == row[said[0] + 1] != first[key]
                restated += 1
            else:
                assert not said and answer == first[key]
    assert restated > 0.9 * (x[:, 64:] == recall.QUESTION).sum()  # nearly every fact asked from segment 2 on
    with pytest.raises(SystemExit, match="n_values >= 2"):
        recall.check({**cfg, "n_values": 1})


def test_rerun_resumes_or_redoes(tmp_path, capsys):
    kw = dict(dataset="recall", data_dir=str(tmp_path), n_train=100, n_val=10)
    meta = prepare.prepare(**kw)
    shard = tmp_path / "recall" / "train_000.bin"
    mtime = shard.stat().st_mtime_ns
    assert prepare.prepare(**kw) == meta and shard.stat().st_mtime_ns == mtime
    assert "already prepared" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        prepare.prepare(**{**kw, "seed": 7})
    assert "seed" in one_line_exit(e) and "--force=True" in str(e.value.code)
    with pytest.raises(SystemExit):  # invalid settings stop before the old data is removed
        prepare.prepare(**{**kw, "n_facts": 9, "force": True})
    assert shard.stat().st_mtime_ns == mtime and (tmp_path / "recall" / "meta.json").exists()
    assert "train_001.bin" in prepare.prepare(**{**kw, "shard_size": 128 * 60, "force": True})["shards"]
    mine = ("train_notes.bin.txt", "val_split.bin.orig", "train_000.bin.bak", "meta.json.orig")
    for name in mine:  # the user's files, named like prepare.py's: --force replaces only what its meta.json lists
        (tmp_path / "recall" / name).write_text("the user's")
    meta = prepare.prepare(**{**kw, "seed": 7, "force": True})
    assert sorted(os.listdir(tmp_path / "recall")) == sorted(["meta.json", "train_000.bin", "val_000.bin", *mine])
    assert meta["settings"]["seed"] == 7 and all((tmp_path / "recall" / n).read_text() == "the user's" for n in mine)


def test_interrupted_run_leaves_no_shards(tmp_path, monkeypatch):
    real, calls = recall.samples, []

    def failing(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(recall, "samples", failing)
    with pytest.raises(KeyboardInterrupt):  # the first 16384 samples have filled 16 shards by then
        prepare.prepare(dataset="recall", data_dir=str(tmp_path), n_train=20_000, shard_size=128 * 1000)
    assert not (tmp_path / "recall").exists() and os.listdir(tmp_path) == []
    # a build directory left by a prepare.py that was killed (its PID gone) is removed by the next run
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f".recall.new-{dead.stdout.strip()}").mkdir()
    (tmp_path / f".recall.new-{dead.stdout.strip()}" / "train_000.bin").write_bytes(b"x")
    monkeypatch.setattr(recall, "samples", real)
    meta = prepare.prepare(dataset="recall", data_dir=str(tmp_path), n_train=100, n_val=10)
    assert sorted(os.listdir(tmp_path / "recall")) == sorted(list(meta["shards"]) + ["meta.json"])
    assert os.listdir(tmp_path) == ["recall"]


@pytest.mark.parametrize("kw,expect", [
    (dict(dataset="recal"), "unknown dataset 'recal' (did you mean 'recall'?"),
    (dict(datset="recall"), "unknown setting 'datset' (did you mean --dataset?)"),
    (dict(shard_size="lots"), "shard_size must be int"),
    (dict(force="yes"), "force must be bool"),
    (dict(dataset="text", input="/nonexistent/*.txt"), "matches no files"),
    (dict(dataset="text"), "--dataset=text needs --input="),
    (dict(dataset="recall", n_facts=9, n_seg=12), "2*n_facts <= seg_len"),
    (dict(dataset="recall", n_filler=70_000), "do not fit uint16"),
    (dict(hf_data_files="x.parquet"), "need --hf_path"),
    (dict(dataset="text", input="*.txt", bad_files="ignore"), "--bad_files=ignore: choose skip or stop"),
    (dict(dataset="text", input="*.txt", tokenizer="chars"), "--tokenizer=chars: choose gpt2 or bytes"),
    (dict(dataset="recall", tokenizer="bytes"), "for a text set (recall has its own)"),
    (dict(dataset="stdlib", input="/nonexistent"), "matches no files"),
    # out of range, or out of data_dir: refused before anything is written
    (dict(dataset="recall", name="../x"), "--name=../x: a plain directory name, made under data_dir"),
    (dict(dataset="recall", name=".hidden"), "--name=.hidden: a plain directory name"),
    (dict(dataset="recall", n_train=0), "--n_train=0: must be >= 1"),
    (dict(dataset="recall", n_val=0), "--n_val=0: must be >= 1"),
    (dict(dataset="recall", seed=-1), "--seed=-1: a seed, an int from 0 to 2**63 - 1"),
    (dict(dataset="text", input="*.txt", max_docs=-1), "--max_docs=-1: must be >= 0 (0 = all documents)"),
    (dict(dataset="text", input="*.txt", val_fraction=1e999), "--val_fraction=inf: must be in [0, 1)"),
])
def test_errors_are_one_line(tmp_path, kw, expect):
    with pytest.raises(SystemExit) as e:
        prepare.prepare(data_dir=str(tmp_path), **kw)
    assert expect in one_line_exit(e)
    assert not glob.glob(str(tmp_path / "*" / "*.bin*"))


def test_network_unreachable(tmp_path, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'Skylion007/openwebtext' on the Hub") from OSError("no route")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(SystemExit) as e:
        prepare.prepare(data_dir=str(tmp_path))
    msg = one_line_exit(e)
    assert "cannot reach" in msg and "--dataset=recall" in msg and "--dataset=text" in msg
    assert not (tmp_path / "openwebtext").exists()


def test_cli(tmp_path):
    run = lambda *args: subprocess.run([sys.executable, os.path.join(ROOT, "prepare.py"), *args],
                                       cwd=tmp_path, capture_output=True, text=True)
    r = run("--dataset=recall", "--n_train=64", "--n_val=8", "--shard_size=1_000")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "data" / "recall" / "meta.json").read_text())
    assert meta["train_tokens"] == 64 * 128 and all(n % 128 == 0 for n in meta["shards"].values())
    assert "already prepared" in run("--dataset=recall", "--n_train=64", "--n_val=8", "--shard_size=1000").stdout
    r = run("--datset=recall")
    assert r.returncode == 1 and r.stderr.strip() == "--datset=recall: unknown setting 'datset' (did you mean --dataset?)"
    r = run("dataset=recall")
    assert r.returncode == 1 and "write settings as --key=value" in r.stderr


def test_import_has_no_side_effects(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_CACHE_DIR"}
    env["PYTHONPATH"] = ROOT
    code = "import os, prepare; print(os.listdir('.'), 'TIKTOKEN_CACHE_DIR' in os.environ, 'datasets' in os.sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[] False False", r.stderr


def test_force_keeps_the_old_set_until_the_new_one_is_complete(tmp_path, monkeypatch):
    """--force=True with the source unreachable (offline) leaves the old set as it was: the new one is built beside
    it and swapped in only when complete; a new set gets another fingerprint, the same one the same."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": DOCS}), src)
    kw = dict(data_dir=str(tmp_path / "data"), hf_path="parquet", hf_data_files=str(src), val_fraction=0.1,
              num_proc=1, tokenizer="bytes")
    meta = prepare.prepare(**kw)
    out_dir = tmp_path / "data" / "openwebtext"
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub") from OSError("no route")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(SystemExit) as e:
        prepare.prepare(**kw, force=True)
    assert "cannot reach" in one_line_exit(e) and f"copy {out_dir} here" in str(e.value)
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before
    assert os.listdir(tmp_path / "data") == ["openwebtext"]  # no build directory left
    monkeypatch.undo()
    (tmp_path / "data" / "openwebtext" / "README.mine").write_text("the user's")  # not prepare.py's: kept
    again = prepare.prepare(**kw, force=True)
    assert again["fingerprint"] == meta["fingerprint"] and len(meta["fingerprint"]) == 64
    assert (out_dir / "README.mine").exists()
    other = prepare.prepare(**{**kw, "val_fraction": 0.2}, force=True)
    assert other["fingerprint"] != meta["fingerprint"]


def test_empty_bom_and_nul_files(tmp_path, capsys):
    """Empty and BOM-only documents stay in the set as they are, but a set of them alone is refused in one line;
    a file with NUL bytes is not text, as sample.py says."""
    for name, data in (("a.txt", "doc a".encode()), ("b.txt", "doc b".encode()), ("c.txt", b""),
                       ("d.txt", "\ufeff".encode()), ("e.txt", "\ufeffdoc e".encode()), ("nul.txt", b"x\x00y")):
        (tmp_path / name).write_bytes(data)
    meta = prepare.prepare(dataset="text", input=str(tmp_path / "*.txt"), data_dir=str(tmp_path / "data"),
                           tokenizer="bytes", val_fraction=0.3)
    out = capsys.readouterr().out
    assert "skipping 1 of 6 files that are not UTF-8 text" in out
    bom = len("\ufeff".encode())
    assert meta["train_docs"] + meta["val_docs"] == 5 and meta["train_tokens"] + meta["val_tokens"] == 3 * 6 + 2 + 2 * bom
    with pytest.raises(SystemExit) as e:
        prepare.prepare(dataset="text", input=str(tmp_path / "[cd].txt"), data_dir=str(tmp_path / "d3"))
    assert one_line_exit(e) == "text gave 2 document(s), 0 with text: need at least 2, val takes the first"
    with pytest.raises(SystemExit) as e:
        prepare.prepare(dataset="text", input=str(tmp_path / "nul.txt"), data_dir=str(tmp_path / "d2"),
                        bad_files="stop")
    assert one_line_exit(e).endswith("nul.txt is not UTF-8 text (it holds NUL bytes): remove it from --input, or "
                                     "pass --bad_files=skip")
    for text in ("", "{oops"):
        (tmp_path / "data" / "text" / "meta.json").write_text(text)
        with pytest.raises(SystemExit) as e:
            prepare.prepare(dataset="text", input=str(tmp_path / "*.txt"), data_dir=str(tmp_path / "data"),
                            tokenizer="bytes", val_fraction=0.3)
        assert "meta.json is not readable JSON (JSONDecodeError): --force=True redoes the set" in one_line_exit(e)


def test_a_set_is_prepared_only_where_it_can_be(tmp_path):
    """A data_dir that is a file, or a place where nothing can be made (/proc; a read-only mount alike), stops with
    one line before any work."""
    (tmp_path / "afile").write_text("x")
    for data_dir, expect in ((str(tmp_path / "afile"), "is a file, not a directory"),
                             (str(tmp_path / "afile" / "data"), "is a file"),
                             ("/proc/memogpt_data", "/proc")):
        with pytest.raises(SystemExit) as e:
            prepare.prepare(dataset="recall", data_dir=data_dir, n_train=100, n_val=10)
        assert expect in one_line_exit(e)


def test_a_split_of_empty_documents_alone_is_refused(tmp_path):
    """val takes the first document: when that is the only one it takes and it is empty, the set is unusable."""
    for name, text in (("a.txt", ""), ("b.txt", "doc b"), ("c.txt", "doc c")):
        (tmp_path / name).write_text(text)
    with pytest.raises(SystemExit) as e:
        prepare.prepare(dataset="text", input=str(tmp_path / "*.txt"), data_dir=str(tmp_path / "data"),
                        tokenizer="bytes", val_fraction=0.3)
    assert one_line_exit(e).startswith("the val split's 1 document(s) of text are all empty (val takes a 0.3 share")
    assert not (tmp_path / "data" / "text").exists()


def test_one_prepare_at_a_time_per_set(tmp_path):
    """Two prepare.py --force on one set at once would both say "wrote" and leave one: the second stops at the
    lock, the first one's set untouched."""
    kw = dict(dataset="recall", data_dir=str(tmp_path), n_train=100, n_val=10)
    prepare.prepare(**kw)
    before = {p.name: p.read_bytes() for p in (tmp_path / "recall").iterdir()}
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "recall" / "LOCK").write_text(f"{sleeper.pid} {__import__('socket').gethostname()}\n")
        with pytest.raises(SystemExit) as e:
            prepare.prepare(**kw, seed=7, force=True)
        assert one_line_exit(e).startswith(f"{tmp_path}/recall is in use by process {sleeper.pid}")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert {p.name: p.read_bytes() for p in (tmp_path / "recall").iterdir() if p.name != "LOCK"} == before
    assert prepare.prepare(**kw, seed=7, force=True)["settings"]["seed"] == 7  # the dead one's lock: taken over


def test_force_killed_at_any_moment_of_the_swap_loses_nothing(tmp_path, capsys):
    """prepare.py --force killed (-9) at each rename of its swap leaves the new set whole under the name, or the old
    one whole beside it (train.py says where); the next run puts the old set back, or removes it, and says so. The
    user's file in the set's directory is never touched."""
    kw = dict(dataset="recall", data_dir=str(tmp_path), n_train=100, n_val=10, shard_size=128 * 60)
    prepare.prepare(**kw)  # 2 train shards; the new set below has 1
    out = tmp_path / "recall"
    (out / "notes.txt").write_text("the user's")
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    outcomes = set()
    for k in range(1, 20):
        pid = os.fork()
        if pid == 0:  # the child: killed at its k-th rename into or out of the set's directory
            try:
                real, real_rmtree, n = os.replace, shutil.rmtree, [0]

                def killed_at_k():
                    n[0] += 1
                    if n[0] == k:
                        os._exit(9)

                def replace(a, b):
                    if str(out) in (os.path.dirname(str(a)), os.path.dirname(str(b))):
                        killed_at_k()
                    real(a, b)

                def rmtree(path, *args, **kwargs):  # the old set's files, when the new set is in place
                    if ".old-" in str(path):
                        killed_at_k()
                    real_rmtree(path, *args, **kwargs)

                os.replace, shutil.rmtree = replace, rmtree
                prepare.prepare(**{**kw, "seed": 7, "shard_size": 100_000_000, "force": True})
            finally:
                os._exit(0)
        if os.waitpid(pid, 0)[1] == 0:
            break  # the swap ran to its end
        capsys.readouterr()
        if not (out / "meta.json").exists():
            with pytest.raises(FileNotFoundError, match=r"a prepare.py stopped while swapping in a new set, the old "
                                                        rf"one is in {tmp_path}/\.recall\.old-{pid}; run prepare.py"):
                __import__("data").load_meta(str(out))
        try:  # the old set's settings: it is back, or the new set is whole
            seed = prepare.prepare(**kw)["settings"]["seed"]
        except SystemExit as e:
            assert "was prepared with other settings (shard_size, seed)" in str(e)
            seed = 7
        said = capsys.readouterr().out
        outcomes.add("removed" if "holds a whole set, removed" in said else "put back" if "put the old set back" in said
                     else "none")
        assert sorted(os.listdir(tmp_path)) == ["recall"] and (out / "notes.txt").read_text() == "the user's"
        if seed == 7:
            assert sorted(os.listdir(out)) == ["meta.json", "notes.txt", "train_000.bin", "val_000.bin"]
            prepare.prepare(**kw, force=True)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == old
    assert k == 9 and outcomes == {"removed", "put back"}  # 8 kill points: 4 files aside, 3 in, the old ones removed


def test_a_full_disk_stops_with_one_line_and_keeps_the_old_set(tmp_path, monkeypatch):
    """The recall set's size is known: too little room stops before the work, naming the bytes; a disk that fills
    while a set is built stops with one line, the build removed and the old set as it was."""
    import errno
    kw = dict(dataset="recall", data_dir=str(tmp_path), n_train=100, n_val=10)
    prepare.prepare(**kw)
    before = {p.name: p.read_bytes() for p in (tmp_path / "recall").iterdir()}
    real = shutil.disk_usage
    with monkeypatch.context() as m, pytest.raises(SystemExit) as e:
        m.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
        prepare.prepare(**kw, seed=7, force=True)
    assert one_line_exit(e) == (f"the recall set needs about 28,160 bytes at {tmp_path}, its disk has 1,000 free: "
                                "free space, or write elsewhere")

    class FullDisk(prepare.ShardWriter):
        def write(self, tokens):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prepare, "ShardWriter", FullDisk)
    with pytest.raises(SystemExit) as e:
        prepare.prepare(**kw, seed=7, force=True)
    assert re.fullmatch(rf"cannot write {tmp_path}/\.recall\.new-\d+: the disk is full \([\d,]+ bytes free, 28,160 "
                        rf"needed\): free space, or write elsewhere; {tmp_path}/recall is as it was", one_line_exit(e))
    assert {p.name: p.read_bytes() for p in (tmp_path / "recall").iterdir()} == before
    assert os.listdir(tmp_path) == ["recall"]
