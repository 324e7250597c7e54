"""
Sample from a trained memoGPT (out_dir/ckpt.pt) or a pretrained GPT-2, printing tokens as they come.

    python sample.py --out_dir=out-recall --start='f1 f2 ? k3'
    python sample.py --init_from=gpt2 --start=FILE:prompt.txt --num_samples=3
    python sample.py --init_from=gpt2 --mem_len=32 --ltm=4 --seg_len=64   # GPT-2 with (untrained) memory
    python sample.py --out_dir=out-recall --ltm=8 --start='f1 f2 ? k3'    # more LTM snapshots than trained

Generation streams (stream.py): a memoGPT carries a fixed-size memory from segment
to segment, so its state does not grow with the number of tokens generated.

Controllable memory: read a document into memory, save it, and ask about it in a later run
without giving the document again (out-recall/doc.txt, README's example: the fact k7 v0, then filler):

    python sample.py --out_dir=out-recall --read=out-recall/doc.txt --save_memory=out-recall/mem.pt --num_samples=0
    python sample.py --out_dir=out-recall --load_memory=out-recall/mem.pt --show_memory=True --max_new_tokens=1 \
        --top_k=1 --num_samples=1 --start='f0 f1 f2 f3 f4 f5 f6 f7 f8 f9 f10 f11 f12 ? k7'
    python sample.py --out_dir=out-recall --load_memory=out-recall/mem.pt --clear_ltm=True --max_new_tokens=1 \
        --top_k=1 --num_samples=1 --start='f0 f1 f2 f3 f4 f5 f6 f7 f8 f9 f10 f11 f12 ? k7'   # or --drop_snapshot=0

(the recall model was trained with questions that close a segment: 13 filler tokens, then "? key")

Where each token reads from: --attention_map pictures, for every token of the first sample, the share of its
attention that goes to each LTM snapshot (by the segment it was written after), to the read slots (the STM)
and to the tokens of its own segment, a panel per layer (--attention_layers=mean: one, averaged over layers);
a .csv of the same numbers goes beside it (and is all that is written without matplotlib):

    python sample.py --out_dir=out-recall --load_memory=out-recall/mem.pt --max_new_tokens=1 --top_k=1 \
        --num_samples=1 --start='f0 f1 f2 f3 f4 f5 f6 f7 f8 f9 f10 f11 f12 ? k7' --attention_map=out-recall/attn.png

Memory holds complete segments only, so --read pads a partial last segment with the end-of-text
token: the whole document is in memory and none of it is left in the prompt. The order is: load,
read, edit (--clear_ltm, --drop_snapshot), save, show, then every sample starts from that memory.
--ltm holds for all of them: a memory read with --ltm=8 keeps up to 8 snapshots, and loads with --ltm=8.
"""
import math
import os
import sys

import torch
from tqdm import tqdm

import checkpoint
from common import autocast
from configurator import at_least, check, configure, device_ok, dtype_ok, seed_ok, writable_file
from model import GPT
from stream import Stream
from tokenizer import get_tokenizer, gpt2_encoding

init_from = "resume"     # resume (out_dir/ckpt.pt) | gpt2, gpt2-medium, ... | a local HF directory
out_dir = "out"
start = "\n"             # the prompt, or FILE:path to read it from a file
num_samples = 10         # 0 = only read/edit/save/show the memory
max_new_tokens = 500
temperature = 0.8        # 1.0 = no change, lower = less random
top_k = 200              # keep only the top_k most likely tokens; 1 = greedy; None = all
seed = 1337
device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = ("bfloat16" if torch.cuda.is_bf16_supported() else "float16") if torch.cuda.is_available() else "float32"
threads = 0              # CPU threads for torch (0 = its default); 1 when other processes share the cores
# memory of a pretrained GPT-2 (--init_from=gpt2*); None = plain GPT-2 (a checkpoint keeps its own)
mem_len = None
ltm = None               # also for a checkpoint: the LTM snapshots kept (None = as trained; adds no parameters)
seg_len = None
# controllable memory (memoGPT only)
read = ""                # a text file to read into memory before generating
load_memory = ""         # start from a memory saved by --save_memory
save_memory = ""         # where to save the memory (after load, read and edits; before generating)
clear_ltm = False        # forget the long-term memory snapshots (the short-term memory stays)
drop_snapshot = None     # forget one snapshot: 0 = oldest, -1 = newest
show_memory = False      # print what the memory holds: per snapshot its segment and norms, the STM norm
attention_map = ""       # a .png: where each token of the first sample reads from (LTM snapshots, read slots, its
                         # segment); the same numbers in a .csv beside it (without matplotlib, only the .csv)
attention_layers = "all" # all: a panel per layer | mean: averaged over layers
config, given = configure(globals())


def attention_map_ok(path):
    """--attention_map: "" (none), or a .png to write, of a run that samples."""
    if not isinstance(path, str):
        return "a path"
    if path and not path.endswith(".png"):
        return "a .png path (the numbers go beside it, in a .csv)"
    if path and num_samples < 1:
        return f"pictures the first sample: needs --num_samples >= 1, got {num_samples}"
    return not path or writable_file(path)


check(config, {
    "num_samples": at_least(0, " (0 = only read, edit, save or show the memory)"),
    "threads": at_least(0),
    "ltm": lambda v: v is None or type(v) is int and v >= 0 or "the LTM snapshots to keep, an int >= 0",
    "mem_len": lambda v: v is None or type(v) is int and v >= 1 or "memory slots, an int >= 1 (or None)",
    "seg_len": lambda v: v is None or type(v) is int and v >= 1 or "tokens per segment, an int >= 1 (or None)",
    "top_k": lambda v: v is None or type(v) is int and v >= 1 or "an int >= 1, or None for all (1 samples greedily)",
    "temperature": lambda v: 0.01 <= v < math.inf or ("must be >= 0.01 and finite (logits divided by less overflow: "
                                                      "--top_k=1 samples greedily)"),
    "max_new_tokens": at_least(0),
    "seed": seed_ok,
    "drop_snapshot": lambda v: v is None or type(v) is int or "a snapshot index like 0 or -1",
    "device": device_ok,
    "dtype": dtype_ok(device),
    **{k: lambda v: isinstance(v, str) or "a path" for k in ("read", "load_memory")},
    "save_memory": lambda v: isinstance(v, str) and (not v or writable_file(v)) or "a path",
    "attention_map": attention_map_ok,
    "attention_layers": lambda v: v in ("all", "mean") or "all (a panel per layer) or mean (over layers)",
})
if threads:
    torch.set_num_threads(threads)


def read_text(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise SystemExit(f"{what} {path} does not exist") from None
    except UnicodeDecodeError:
        raise SystemExit(f"{what} {path} is not text (not UTF-8)") from None
    except OSError as e:
        raise SystemExit(f"cannot read {what} {path}: {e.strerror}") from None
    if "\x00" in text:
        raise SystemExit(f"{what} {path} is not text (it holds NUL bytes)")
    return text


def tokenize(text, what):
    try:
        return encode(text)
    except ValueError as e:  # a word the recall vocabulary does not have
        raise SystemExit(f"{what}: {e}") from None


def pieces(tokens, context):
    """The text each new token adds, decoding a token together with the one before it (the recall
    tokenizer puts spaces between tokens); a token that ends inside a UTF-8 character waits."""
    ctx, new = context[-1:], []
    for t in tokens:
        new.append(t)
        text = decode(ctx + new)
        if not text.endswith("\ufffd"):
            yield text[len(decode(ctx)):]
            ctx, new = new[-1:], []
    if new:
        yield decode(ctx + new)[len(decode(ctx)):]


torch.manual_seed(seed)  # the new memory parameters of a pretrained GPT-2 start random
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
device_type = "cuda" if "cuda" in device else "cpu"
ctx = autocast(device_type, dtype)

# model and tokenizer
overrides = {k: v for k, v in dict(mem_len=mem_len, ltm=ltm, seg_len=seg_len).items() if v is not None}
fixed = [k for k in ("mem_len", "seg_len") if k in overrides]  # not ltm: its size adds no parameters
if init_from == "resume" and fixed:
    raise SystemExit(f"--{fixed[0]} sets the memory of a pretrained GPT-2 (--init_from=gpt2*); a checkpoint keeps "
                     "the memory it was trained with (only --ltm may change: its size adds no parameters)")
try:
    if init_from == "resume":
        ckpt_path = os.path.join(out_dir, "ckpt.pt")
        model, ckpt = checkpoint.load_model(ckpt_path, device)
        meta = ckpt["meta"]
        checkpoint.warn_if_memory_never_read(ckpt, ckpt_path)
    else:
        model = GPT.from_pretrained(init_from, dropout=0.0, **overrides).to(device)
        enc = gpt2_encoding()
        meta = {"tokenizer": "gpt2", "eot": enc.eot_token, "vocab_size": enc.n_vocab}
except (OSError, ValueError) as e:
    raise SystemExit(str(e)) from None
model.eval()
encode, decode = get_tokenizer(meta)
cfg = model.config

memory_options = dict(ltm=ltm, read=read, load_memory=load_memory, save_memory=save_memory, clear_ltm=clear_ltm,
                      drop_snapshot=drop_snapshot, show_memory=show_memory, attention_map=attention_map)
asked = [f"--{k}" for k, v in memory_options.items() if v not in ("", None) and v is not False]
if asked and cfg.mem_len == 0:
    raise SystemExit(f"{' '.join(asked)}: this model is a plain GPT without memory (mem_len=0); use a memoGPT "
                     "checkpoint or --init_from=gpt2 --mem_len=32 --ltm=4 --seg_len=64")
csv_path = os.path.splitext(attention_map)[0] + ".csv"
if attention_map:  # the lab's: the tutorial needs it only here
    from lab.attention_map import MapStream, plot, shares_table, write_csv


def same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_memory_file(path):
    try:
        return "made_by" in torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False


def made_here(path, head):
    """path starts with the bytes this script writes there (a PNG, or the attention csv's header)."""
    with open(path, "rb") as f:
        return f.read(len(head)) == head


# nothing is written over what this script did not make: a memory file over a memory file only, the map over a map
if save_memory and os.path.exists(save_memory):
    for other, what in ((init_from == "resume" and os.path.join(out_dir, "ckpt.pt"), "the checkpoint"),
                        (read, "the document --read reads"),
                        (start.startswith("FILE:") and start[5:], "the prompt file")):
        if other and same_file(save_memory, other):
            raise SystemExit(f"--save_memory={save_memory} is {what}: save the memory to another path")
    if not is_memory_file(save_memory):
        raise SystemExit(f"--save_memory={save_memory} exists and is not a memory file: sample.py writes over memory "
                         "files only, choose another path")
if attention_map:
    for path, head in ((attention_map, b"\x89PNG"), (csv_path, b"index,token,segment,layer,")):
        if os.path.exists(path) and not made_here(path, head):
            raise SystemExit(f"--attention_map={attention_map}: {path} exists and is not an attention map "
                             "sample.py wrote: choose another path")
if num_samples == 0 and "start" in given:
    raise SystemExit("--start is not used with --num_samples=0 (that only reads, edits, saves or shows the memory): "
                     "give --num_samples >= 1 to generate from it")
if num_samples > 0:  # checked before the (maybe long) reading
    if start.startswith("FILE:"):
        path = start[len("FILE:"):]
        prompt_ids = tokenize(read_text(path, "prompt file"), f"prompt file {path}")
    else:
        prompt_ids = tokenize(start, "the prompt (--start)")
    start_ids = prompt_ids or [meta["eot"]]  # an empty prompt starts from end-of-text, like GPT-2

# memory: load, read, edit, save, show
mem = model.empty_memory(1) if asked else None  # None: each sample starts from an empty memory
with torch.no_grad(), ctx:
    if load_memory:
        try:
            mem = checkpoint.load_memory(load_memory, model, device, ltm)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(str(e)) from None
        if mem.stm.size(0) != 1:  # every sample starts from it: one memory, not a batch
            raise SystemExit(f"memory file {load_memory} holds a batch of {mem.stm.size(0)} memories, sample.py reads "
                             "one: save it with sample.py --read=DOC --save_memory=FILE")
    if read:
        ids = tokenize(read_text(read, "document"), f"document {read}")
        if not ids:
            raise SystemExit(f"document {read} is empty: nothing to read into memory")
        pad = -len(ids) % cfg.seg_len
        x = torch.tensor(ids + [meta["eot"]] * pad, dtype=torch.long, device=device)[None]
        for i in tqdm(range(0, x.size(1), cfg.seg_len), desc=f"reading {read}", unit="segment"):
            _, _, mem = model(x[:, i:i + cfg.seg_len], mem=mem, ltm_size=ltm)
        print(f"read {len(ids)} tokens of {read} into memory ({x.size(1) // cfg.seg_len} segments, "
              f"the last padded with {pad} end-of-text tokens)", file=sys.stderr)
    if clear_ltm:
        mem = mem.clear_ltm()
    if drop_snapshot is not None:
        if not -len(mem.snapshots) <= drop_snapshot < len(mem.snapshots):
            raise SystemExit(f"--drop_snapshot={drop_snapshot}: the memory has {len(mem.snapshots)} snapshots "
                             "(0 = oldest, -1 = newest)")
        mem = mem.drop_snapshot(drop_snapshot)
    if save_memory:
        try:
            checkpoint.save_memory(mem, save_memory, model)
        except OSError as e:
            raise SystemExit(f"cannot save the memory to {save_memory}: {e.strerror}") from None
        print(f"saved the memory ({mem.n_seg} segments read, {mem.nbytes():,} bytes) to {save_memory}",
              file=sys.stderr)
    if show_memory:
        print(mem.describe(cfg.seg_len))

# generate, printing each token as it comes
torch.manual_seed(seed)  # again: the draws do not depend on what ran before
with torch.no_grad(), ctx:
    for i in range(num_samples):
        idx = torch.tensor(start_ids, dtype=torch.long, device=device)[None]
        mapped = attention_map and i == 0
        stream = MapStream(model, 1, mem, ltm) if mapped else Stream(model, 1, mem, ltm)
        print(decode(prompt_ids), end="", flush=True)
        new = stream.generate(idx, max_new_tokens, temperature, top_k, meta["vocab_size"])
        for piece in pieces((t.item() for t in new), prompt_ids):
            print(piece, end="", flush=True)
        print("\n---------------", flush=True)
        if mapped:
            tab = shares_table(stream, decode, attention_layers)
            write_csv(csv_path, tab)
            try:
                plot(attention_map, tab)
                wrote = f"{attention_map} and {csv_path}"
            except ImportError:
                wrote = f"{csv_path} only (matplotlib is not installed: pip install matplotlib for {attention_map})"
            print(f"attention map of the first sample's {len(tab['tokens'])} tokens: {wrote}", file=sys.stderr)
