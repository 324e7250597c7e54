"""
sample.py's claims, as tests: what it prints is what model.generate makes (recall tokens and GPT-2
BPE, whose tokens can end inside a character); generation state does not grow with length; a
document read into memory, saved and loaded gives the same generation as reading it again; memory
edits do what they say; bad input stops with one line. sample.py runs in this process (runpy),
to save a torch import per run.
"""
import csv
import dataclasses
import json
import os
import runpy
import sys

import pytest
import torch
from safetensors.torch import save_file

import recall
from checkpoint import FORMAT, load_memory, save_memory
from lab.attention_map import MapStream
from memory import Memory
from model import GPT, GPTConfig
from stream import Stream
from tokenizer import get_tokenizer, gpt2_encoding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo: scripts run by path
S = 8  # seg_len
ITOS = recall.vocab(dict(n_keys=8, n_values=8, n_filler=8))
META = dict(tokenizer="recall", vocab_size=len(ITOS), eot=0, itos=ITOS)
encode, decode = get_tokenizer(META)
SEP = "\n---------------\n"
PROMPT = "f1 ? k3"


def tiny(mem_len=4, **kw):
    torch.manual_seed(0)
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=S, vocab_size=len(ITOS), dropout=0.0,
                mem_len=mem_len, ltm=2, seg_len=S)
    args.update(kw)
    model = GPT(GPTConfig(**args)).eval()
    with torch.no_grad():  # 3x GPT-2's init: sharp enough that what the memory holds changes greedy choices
        for p in model.parameters():
            p.mul_(3)
    return model


def write_checkpoint(out_dir, model, meta=META, **extra):
    os.makedirs(out_dir, exist_ok=True)
    torch.save({**dict(format=FORMAT, model=model.state_dict(), model_args=dataclasses.asdict(model.config),
                       meta=meta, optimizer=None, iter_num=0), **extra}, os.path.join(out_dir, "ckpt.pt"))
    return str(out_dir)


class Payload:
    """Unpickling this creates the file at path: what a checkpoint made by someone else could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """A memoGPT checkpoint and a document of 3 segments and 3 tokens."""
    path = tmp_path_factory.mktemp("out")
    model = tiny()
    doc = torch.randint(2, len(ITOS), (3 * S + 3,), generator=torch.Generator().manual_seed(1)).tolist()
    (path / "doc.txt").write_text(decode(doc))
    return write_checkpoint(path, model), model, doc


def run(*args):
    """sample.py with these arguments; returns what it printed (pytest's capsys collects it)."""
    argv = sys.argv
    sys.argv = ["sample.py", *args]
    try:
        runpy.run_path(os.path.join(ROOT, "sample.py"), run_name="__main__")
    finally:
        sys.argv = argv


def greedy(model, n, mem=None, prompt=PROMPT, ltm=None):
    idx = torch.tensor([encode(prompt)])
    return decode(model.generate(idx, n, top_k=1, mem=mem, ltm_size=ltm)[0].tolist())


def test_prints_what_generate_makes(out, capsys):
    out_dir, model, _ = out
    n = 3 * S + 4  # several segments, the last one partial
    run(f"--out_dir={out_dir}", f"--start={PROMPT}", "--num_samples=2", f"--max_new_tokens={n}",
        "--temperature=1.0", "--top_k=None", "--seed=7")
    torch.manual_seed(7)
    idx = torch.tensor([encode(PROMPT)])
    samples = [decode(model.generate(idx, n, temperature=1.0)[0].tolist()) for _ in range(2)]
    assert samples[0] != samples[1]
    assert capsys.readouterr().out == samples[0] + SEP + samples[1] + SEP


def test_threads_setting(out, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    run(f"--out_dir={out[0]}", "--num_samples=0")
    run(f"--out_dir={out[0]}", "--num_samples=0", "--threads=1")
    assert calls == [1]


def test_never_samples_a_padded_id(tmp_path, capsys):
    """train.py pads the vocabulary to a multiple of 64: ids past the tokenizer's are never drawn."""
    model = tiny(vocab_size=64)
    out_dir = write_checkpoint(tmp_path, model)
    n = 3 * S
    run(f"--out_dir={out_dir}", f"--start={PROMPT}", "--num_samples=1", f"--max_new_tokens={n}",
        "--temperature=1.0", "--top_k=None", "--seed=7")
    idx = torch.tensor([encode(PROMPT)])
    torch.manual_seed(7)
    assert model.generate(idx, n, temperature=1.0)[0].max() >= len(ITOS)  # the case this test is about
    torch.manual_seed(7)
    ids = model.generate(idx, n, temperature=1.0, vocab_size=len(ITOS))[0].tolist()
    assert capsys.readouterr().out == decode(ids) + SEP


def test_empty_prompt_starts_from_end_of_text(out, capsys):
    out_dir, model, _ = out
    generated = model.generate(torch.tensor([[META["eot"]]]), S, top_k=1)[0, 1:].tolist()
    for start in (["--start="], []):  # the default "\n" holds no recall token
        run(f"--out_dir={out_dir}", *start, "--num_samples=1", f"--max_new_tokens={S}", "--top_k=1")
        assert capsys.readouterr().out == decode(generated) + SEP


def test_gpt2_bpe_prints_whole_characters(tmp_path, capsys):
    """A local HF directory, with memory added. Its vocabulary is GPT-2's first 300 tokens, mostly single
    bytes, so sampling makes many tokens that end inside a character (or are no UTF-8 at all): they are
    held back until the text is whole, and the printed text equals decoding all tokens at once."""
    torch.manual_seed(0)
    plain = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=300))
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    save_file({k: (v.t() if k.endswith(conv1d) else v).contiguous() for k, v in plain.state_dict().items()
               if k != "lm_head.weight"}, tmp_path / "model.safetensors")  # HF's layout; lm_head is tied to wte
    (tmp_path / "config.json").write_text(json.dumps(dict(n_layer=1, n_head=2, n_embd=16, n_positions=16,
                                                          vocab_size=300)))
    n = 100
    run(f"--init_from={tmp_path}", "--mem_len=2", "--ltm=1", "--seg_len=8", "--start=a", "--num_samples=1",
        f"--max_new_tokens={n}", "--temperature=1.0", "--top_k=None", "--seed=3")
    enc = gpt2_encoding()
    torch.manual_seed(3)  # as sample.py: the new memory parameters start from the seed
    model = GPT.from_pretrained(str(tmp_path), dropout=0.0, mem_len=2, ltm=1, seg_len=8).eval()
    torch.manual_seed(3)
    ids = model.generate(torch.tensor([enc.encode("a")]), n, temperature=1.0)[0].tolist()
    assert sum("\ufffd" in enc.decode([t]) for t in ids) > 10  # the case this test is about
    assert capsys.readouterr().out == enc.decode(ids) + SEP


def test_state_does_not_grow():
    model = tiny()
    stream = Stream(model, 1)
    sizes = [stream.nbytes() for _ in stream.generate(torch.tensor([[1]]), 16 * S, top_k=1)]
    # sizes[i] is taken after 1 + i tokens were read: i = 4S-1 and 16S-1 are the ends of segments 4 and 16
    assert sizes[4 * S - 1] == sizes[16 * S - 1] and max(sizes) == max(sizes[:4 * S])
    assert stream.mem.n_seg == 16 and len(stream.mem.snapshots) == 2


def test_read_save_load_edit_memory(out, tmp_path, capsys):
    out_dir, model, doc = out
    common = (f"--out_dir={out_dir}", f"--start={PROMPT}", "--num_samples=1", f"--max_new_tokens={2 * S}", "--top_k=1")
    mem_file, edited = tmp_path / "mem.pt", tmp_path / "edited.pt"
    # the partial last segment is padded with end-of-text tokens: 4 complete segments in memory
    _, _, mem = model(torch.tensor([doc + [META["eot"]] * (S - 3)]))
    assert mem.n_seg == 4 and len(mem.snapshots) == 2

    run(*common, f"--read={out_dir}/doc.txt", f"--save_memory={mem_file}", "--show_memory=True")
    with_doc = greedy(model, 2 * S, mem)
    assert capsys.readouterr().out == mem.describe(S) + "\n" + with_doc + SEP
    saved = load_memory(mem_file, model)
    torch.testing.assert_close(saved.stm, mem.stm, rtol=0, atol=1e-6)
    torch.testing.assert_close(saved.snapshots, mem.snapshots, rtol=0, atol=1e-6)

    run(*common, f"--load_memory={mem_file}")  # a later run: the document is not given again
    assert capsys.readouterr().out == with_doc + SEP

    run(*common, f"--load_memory={mem_file}", "--clear_ltm=True", "--show_memory=True")
    without_ltm = greedy(model, 2 * S, mem.clear_ltm())
    assert without_ltm != with_doc and without_ltm != greedy(model, 2 * S)  # the LTM mattered, the STM still does
    assert capsys.readouterr().out == mem.clear_ltm().describe(S) + "\n" + without_ltm + SEP

    run(f"--out_dir={out_dir}", f"--load_memory={mem_file}", "--drop_snapshot=0", f"--save_memory={edited}",
        "--num_samples=0")
    assert capsys.readouterr().out == ""
    dropped = load_memory(edited, model)
    assert dropped.n_seg == 4 and len(dropped.snapshots) == 1 and torch.equal(dropped.snapshots[0], saved.snapshots[1])


def test_ltm_for_a_checkpoint(out, tmp_path, capsys):
    """--ltm keeps another number of snapshots with the checkpoint's weights (its size adds no parameters): reading,
    saving, loading and generating all use it."""
    out_dir, model, doc = out
    common = (f"--out_dir={out_dir}", f"--start={PROMPT}", "--num_samples=1", f"--max_new_tokens={2 * S}", "--top_k=1")
    mem_file = tmp_path / "mem.pt"
    x = torch.tensor([doc + [META["eot"]] * (S - 3)])
    mem = model(x, ltm_size=4)[2]
    assert len(mem.snapshots) == 4
    with_4 = greedy(model, 2 * S, mem, ltm=4)
    assert with_4 != greedy(model, 2 * S, model(x)[2])  # the case this test is about: the trained ltm=2 differs

    run(*common, "--ltm=4", f"--read={out_dir}/doc.txt", f"--save_memory={mem_file}")
    assert capsys.readouterr().out == with_4 + SEP
    run(*common, "--ltm=4", f"--load_memory={mem_file}")
    assert capsys.readouterr().out == with_4 + SEP
    with pytest.raises(SystemExit) as e:
        run(*common, f"--load_memory={mem_file}")
    assert str(e.value) == (f"memory file {mem_file} holds 4 LTM snapshots, more than the 2 kept here: load it with "
                            "ltm=4 (sample.py --ltm=4)")


def test_clear_errors(out, tmp_path):
    out_dir, model, _ = out
    save_memory(tiny(mem_len=2).empty_memory(1), tmp_path / "other.pt", tiny(mem_len=2))
    save_memory(Memory(torch.zeros(1, 3, 32), [], 0), tmp_path / "bad_stm.pt", model)  # a valid header, a wrong STM
    (tmp_path / "junk.pt").write_bytes(b"not a memory")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00\x01")
    plain = write_checkpoint(tmp_path / "plain", tiny(mem_len=0))
    older = write_checkpoint(tmp_path / "older", model, format=1)
    marker = tmp_path / "payload_ran"
    unsafe = write_checkpoint(tmp_path / "unsafe", model, payload=Payload(str(marker)))
    whole = (tmp_path / "unsafe" / "ckpt.pt").read_bytes()
    for name, data in (("empty", b""), ("truncated", whole[:len(whole) // 2]), ("junk", b"not a checkpoint" * 9)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ckpt.pt").write_bytes(data)
    def load(name):
        return [f"--out_dir={out_dir}", "--num_samples=0", f"--load_memory={tmp_path}/{name}"]

    cases = [
        ([f"--out_dir={tmp_path}/nothing"], "python train.py"),
        (load("other.pt"), "read the document again with this model"),
        (load("junk.pt"), "is not a memory file: make one with sample.py --save_memory"),
        (load("missing.pt"), "make one with sample.py --read="),
        (load("bad_stm.pt"), "bad_stm.pt is damaged (its STM is (1, 3, 32)"),
        ([f"--out_dir={unsafe}"], "unsafe/ckpt.pt was not loaded: it holds more than tensors and plain values"),
        ([f"--out_dir={tmp_path}/empty"], "empty/ckpt.pt is not a readable checkpoint (EOFError"),
        ([f"--out_dir={tmp_path}/truncated"], "truncated/ckpt.pt is not a readable checkpoint (RuntimeError"),
        ([f"--out_dir={tmp_path}/junk"], "junk/ckpt.pt was not loaded: it holds more than tensors and plain values"),
        ([f"--out_dir={older}"], "older/ckpt.pt was written by an older model.py (another memory gate or weight-decay groups, issue 40)"),
        ([f"--out_dir={out_dir}", f"--read={out_dir}/doc.txt", f"--save_memory={tmp_path}/nodir/mem.pt"],
         f"the directory {tmp_path}/nodir does not exist"),
        ([f"--out_dir={out_dir}", "--max_new_tokens=-1"], "--max_new_tokens=-1: must be >= 0"),
        ([f"--out_dir={out_dir}", f"--start=FILE:{tmp_path}/missing.txt"], "missing.txt does not exist"),
        ([f"--out_dir={out_dir}", f"--start=FILE:{tmp_path}/binary.txt"], "binary.txt is not text"),
        ([f"--out_dir={out_dir}", "--start=hello"], "'hello' is not a recall token"),
        ([f"--out_dir={plain}", f"--read={out_dir}/doc.txt"], "--read: this model is a plain GPT"),
        ([f"--out_dir={out_dir}", "--drop_snapshot=5", "--num_samples=0"], "the memory has 0 snapshots"),
        ([f"--out_dir={out_dir}", "--mem_len=8"], "a checkpoint keeps the memory it was trained with (only --ltm"),
        ([f"--out_dir={out_dir}", "--ltm=-1"], "--ltm=-1: the LTM snapshots to keep, an int >= 0"),
        ([f"--out_dir={plain}", "--ltm=4"], "--ltm: this model is a plain GPT"),
        ([f"--out_dir={out_dir}", f"--start={PROMPT}", "--temperature=0"], "--temperature=0.0: must be >= 0.01"),
        # sampled, these would overflow or be refused by torch: stopped before the model loads
        ([f"--out_dir={out_dir}", "--temperature=5e-324"], "--temperature=5e-324: must be >= 0.01 and finite"),
        ([f"--out_dir={out_dir}", "--temperature=1e999"], "--temperature=inf: must be >= 0.01 and finite"),
        ([f"--out_dir={out_dir}", "--top_k=0"], "--top_k=0: an int >= 1, or None for all"),
        ([f"--out_dir={out_dir}", "--seed=-1"], "--seed=-1: a seed, an int from 0 to 2**63 - 1"),
        ([f"--out_dir={out_dir}", f"--seed={2**64}"], "a seed, an int from 0 to 2**63 - 1"),
        ([f"--out_dir={out_dir}", f"--start={PROMPT}", "--num_samples=0"], "--start is not used with --num_samples=0"),
        ([f"--out_dir={plain}", "--attention_map=attn.png"], "--attention_map: this model is a plain GPT"),
        ([f"--out_dir={out_dir}", "--attention_map=attn.jpg"], "--attention_map=attn.jpg: a .png path"),
        ([f"--out_dir={out_dir}", f"--attention_map={tmp_path}/nodir/attn.png"],
         f"the directory {tmp_path}/nodir does not exist"),
        ([f"--out_dir={out_dir}", "--attention_map=attn.png", "--num_samples=0"], "needs --num_samples >= 1"),
        ([f"--out_dir={out_dir}", "--attention_layers=first"], "--attention_layers=first: all (a panel per layer)"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as e:
            run(*args)
        assert message in str(e.value) and "\n" not in str(e.value), (args, e.value)
    assert not marker.exists() and not (tmp_path / "nodir").exists()


def test_attention_map_without_matplotlib(out, tmp_path, monkeypatch, capsys):
    """With a loaded memory, over 3 segments: the .csv holds every token's shares by layer (averaged over
    heads), each snapshot by its segment (blank where the token's LTM no longer or not yet held it); without
    matplotlib one line says so and no .png is made. The generated text is the same as without the map."""
    out_dir, model, doc = out
    mem_file = tmp_path / "mem.pt"
    run(f"--out_dir={out_dir}", f"--read={out_dir}/doc.txt", f"--save_memory={mem_file}", "--num_samples=0")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    capsys.readouterr()
    run(f"--out_dir={out_dir}", f"--load_memory={mem_file}", f"--start={PROMPT}", "--num_samples=1",
        f"--max_new_tokens={2 * S}", "--top_k=1", f"--attention_map={tmp_path}/attn.png")
    printed = capsys.readouterr()
    mem = load_memory(mem_file, model)
    assert printed.out == greedy(model, 2 * S, mem) + SEP
    assert printed.err.strip().splitlines()[-1] == (
        f"attention map of the first sample's {3 + 2 * S} tokens: {tmp_path}/attn.csv only (matplotlib is not "
        f"installed: pip install matplotlib for {tmp_path}/attn.png)")
    assert not (tmp_path / "attn.png").exists()

    stream = MapStream(model, 1, mem)
    ids = torch.tensor([encode(PROMPT)])
    ids = torch.cat([ids, *stream.generate(ids, 2 * S, top_k=1)], dim=1)[0]
    with open(tmp_path / "attn.csv", newline="") as f:
        rows = list(csv.reader(f))
    snapshots = ["LTM: segment 2", "LTM: segment 3", "LTM: segment 4", "LTM: segment 5"]
    assert rows[0] == ["index", "token", "segment", "layer", *snapshots, "read slots (STM)", "segment tokens"]
    assert len(rows) == 1 + 2 * len(ids)  # a row per token and layer
    for row in rows[1:]:
        t, layer = int(row[0]), int(row[3].removeprefix("layer "))
        _, seg, segs, share = stream.rows[t]
        assert row[1:3] == [decode([ids[t].item()]), str(seg)] and seg == 4 + t // S and segs == [seg - 2, seg - 1]
        held = [f"LTM: segment {s}" for s in segs] + ["read slots (STM)", "segment tokens"]
        assert [rows[0][i] for i in range(4, 10) if row[i]] == held
        got = [float(v) for v in row[4:] if v]
        torch.testing.assert_close(torch.tensor(got), share[0, layer].mean(0), atol=1e-6, rtol=0)
        assert abs(sum(got) - 1) < 1e-5


def test_attention_map_png(out, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out_dir, _, _ = out
    for layers in ("all", "mean"):
        run(f"--out_dir={out_dir}", f"--start={PROMPT}", "--num_samples=2", f"--max_new_tokens={S}", "--top_k=1",
            f"--attention_map={tmp_path}/{layers}.png", f"--attention_layers={layers}")
        assert (tmp_path / f"{layers}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert capsys.readouterr().err.strip().endswith(f"{tmp_path}/{layers}.png and {tmp_path}/{layers}.csv")
    with open(tmp_path / "mean.csv", newline="") as f:
        assert {row[3] for row in list(csv.reader(f))[1:]} == {"mean over layers"}


def test_bytes_checkpoint_reads_a_file_into_memory_and_continues_another(tmp_path, capsys):
    """A byte-level memoGPT (prepare.py --tokenizer=bytes): --read a Python file of many segments into memory, then
    continue a prompt file. The output is what model.generate makes from that memory, decoded as one text: the
    untrained model draws bytes that are no UTF-8, printed as U+FFFD, and never an id past the tokenizer's."""
    meta = dict(tokenizer="bytes", vocab_size=257, eot=256)
    enc, dec = get_tokenizer(meta)
    model = tiny(vocab_size=320)
    out_dir = write_checkpoint(tmp_path / "out", model, meta, config=dict(n_seg=4, curriculum=(2,)))
    doc = "# héllo ✓\n" + open(os.path.join(ROOT, "memory.py")).read()[:20 * S]
    (tmp_path / "long.py").write_text(doc)
    (tmp_path / "prompt.py").write_text("def f(x):\n    return")
    n = 3 * S
    run(f"--out_dir={out_dir}", f"--read={tmp_path}/long.py", f"--start=FILE:{tmp_path}/prompt.py", "--num_samples=1",
        f"--max_new_tokens={n}", "--temperature=1.0", "--top_k=None", "--seed=5")
    ids = enc(doc)
    _, _, mem = model(torch.tensor([ids + [meta["eot"]] * (-len(ids) % S)]))
    torch.manual_seed(5)
    new = model.generate(torch.tensor([enc("def f(x):\n    return")]), n, temperature=1.0, mem=mem,
                         vocab_size=257)[0].tolist()
    assert "\ufffd" in dec(new) and max(new) <= 256  # the case this test is about
    out, err = capsys.readouterr()
    assert out == dec(new) + SEP
    assert err.splitlines()[-1] == (f"read {len(ids)} tokens of {tmp_path}/long.py into memory ({-(-len(ids) // S)} "
                                    f"segments, the last padded with {-len(ids) % S} end-of-text tokens)")


def test_a_memory_never_read_in_training_is_warned_of(tmp_path, capsys):
    """A memoGPT trained on one segment per sample (train.py's config n_seg 1, no curriculum) never read its memory:
    one line says so; a plain GPT's, or a memoGPT's trained across segments, nothing."""
    one = write_checkpoint(tmp_path / "one", tiny(), config=dict(n_seg=1, curriculum=()))
    run(f"--out_dir={one}", "--num_samples=0")
    assert capsys.readouterr().err == (f"warning: {one}/ckpt.pt was trained on one segment per sample (n_seg=1, no "
                                       "curriculum): its memory was never read in training\n")
    for out_dir, model, config in (("plain", tiny(mem_len=0), dict(n_seg=1, curriculum=())),
                                   ("grown", tiny(), dict(n_seg=1, curriculum=(2,)))):
        run(f"--out_dir={write_checkpoint(tmp_path / out_dir, model, config=config)}", "--num_samples=0")
        assert capsys.readouterr().err == ""


def test_nothing_written_over_what_sample_py_did_not_make(out, tmp_path):
    """--save_memory writes over a memory file only: never the checkpoint, the document --read reads, or any other
    file; --attention_map only over its own map. Each refusal is one line, and the file is as it was."""
    out_dir, model, _ = out
    doc = f"{out_dir}/doc.txt"
    mine = tmp_path / "mine.csv"
    mine.write_text("a,b\n1,2\n")
    (tmp_path / "notes.png").write_text("my notes")
    kept = {p: open(p, "rb").read() for p in (f"{out_dir}/ckpt.pt", doc, mine)}
    read = [f"--out_dir={out_dir}", f"--read={doc}", "--num_samples=0"]
    for args, message in (
            (read + [f"--save_memory={out_dir}/ckpt.pt"], "is the checkpoint: save the memory to another path"),
            (read + [f"--save_memory={doc}"], "is the document --read reads"),
            (read + [f"--save_memory={mine}"], "exists and is not a memory file"),
            ([f"--out_dir={out_dir}", f"--start={PROMPT}", "--num_samples=1", f"--attention_map={tmp_path}/mine.png"],
             "mine.csv exists and is not an attention map sample.py wrote"),
            ([f"--out_dir={out_dir}", f"--start={PROMPT}", "--num_samples=1", f"--attention_map={tmp_path}/notes.png"],
             "notes.png exists and is not an attention map"),
            ([f"--out_dir={out_dir}", "--num_samples=-2"], "--num_samples=-2: must be >= 0"),
            ([f"--out_dir={out_dir}", "--dtype=float64"], "--dtype=float64: choose float32, bfloat16 or float16")):
        with pytest.raises(SystemExit) as e:
            run(*args)
        assert message in str(e.value) and "\n" not in str(e.value), (args, e.value)
    assert {p: open(p, "rb").read() for p in kept} == kept
    run(*read, f"--save_memory={tmp_path}/mem.pt")
    run(*read, f"--save_memory={tmp_path}/mem.pt")  # a memory file: written over


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["stm"].fill_(float("nan")), "it holds NaN or infinite values"),
    (lambda s: s.update(stm=s["stm"].double()), "it holds torch.float64, not float32, bfloat16 or float16"),
    (lambda s: s.update(segs=[99, -5]), "snapshot segments [99, -5] are not increasing segments of the 4 read"),
    (lambda s: s.update(n_seg="4"), "its segment count '4' or snapshot segments [2, 3] do not fit its snapshots"),
    # finite, but attention would make NaN of it
    (lambda s: s["ltm"][0].fill_(1e30), "it holds values beyond 10000 in magnitude, which attention would turn into "
                                        "NaN"),
])
def test_a_damaged_memory_file_is_refused(out, tmp_path, edit, message):
    out_dir, model, doc = out
    with torch.no_grad():
        mem = model(torch.tensor([doc + [META["eot"]] * (4 * S - len(doc))]))[2]
    save_memory(mem, tmp_path / "mem.pt", model)
    state = torch.load(tmp_path / "mem.pt", weights_only=True)
    edit(state)
    torch.save(state, tmp_path / "mem.pt")
    with pytest.raises(ValueError) as e:
        load_memory(tmp_path / "mem.pt", model)
    assert f"memory file {tmp_path}/mem.pt is damaged ({message}): read the document again" == str(e.value)


def test_attention_map_py_is_a_library(tmp_path):
    import subprocess
    r = subprocess.run([sys.executable, "-m", "lab.attention_map", "--foo=1"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 1 and r.stderr.startswith("lab/attention_map.py is a library") and r.stderr.count("\n") == 1


def test_a_memory_file_of_a_batch_is_refused_where_one_is_read(out, tmp_path):
    """A memory of 3 documents at once passes load_memory (a batch is a memory too), but sample.py starts every
    sample from one: it stops with one line, not in the sampling."""
    out_dir, model, _ = out
    save_memory(model.empty_memory(3), tmp_path / "batch.pt", model)
    assert load_memory(tmp_path / "batch.pt", model).stm.size(0) == 3
    with pytest.raises(SystemExit) as e:
        run(f"--out_dir={out_dir}", f"--load_memory={tmp_path}/batch.pt", f"--start={PROMPT}", "--num_samples=1")
    assert str(e.value) == (f"memory file {tmp_path}/batch.pt holds a batch of 3 memories, sample.py reads one: save "
                            "it with sample.py --read=DOC --save_memory=FILE")


def test_the_tutorial_imports_the_lab_only_for_an_attention_map(out, tmp_path):
    """sample.py without --attention_map runs without lab/ (the tutorial stands alone); with it, it imports
    lab.attention_map."""
    import subprocess
    out_dir = out[0]
    code = ("import runpy, sys; sys.argv = ['sample.py', *sys.argv[1:]]; "
            f"runpy.run_path({os.path.join(ROOT, 'sample.py')!r}, run_name='__main__'); "
            "print('lab.attention_map' in sys.modules)")
    for extra, imported in (([], "False"), ([f"--attention_map={tmp_path}/attn.png"], "True")):
        r = subprocess.run([sys.executable, "-c", code, f"--out_dir={out_dir}", f"--start={PROMPT}", "--num_samples=1",
                            "--max_new_tokens=1", *extra], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"})
        assert r.returncode == 0 and r.stdout.splitlines()[-1] == imported, r.stderr[-2000:]
