"""
Train memoGPT (mem_len > 0) or the plain GPT baseline (mem_len = 0), nanoGPT style.

    python train.py config/recall.py                      # the CPU quick start, into out-recall/
    python train.py config/recall.py --mem_len=0 --out_dir=out-recall-gpt   # the same without memory
    torchrun --standalone --nproc_per_node=8 train.py config/finetune_memogpt_medium.py

A sample is n_seg segments of seg_len tokens. memoGPT reads it segment by segment from an empty memory, with
gradients through the memory (bptt segments back, 0 = all); the plain GPT reads each segment as its own window
(training.read_samples). Long-distance memory is not learned at full length from scratch, so a curriculum grows the
segments per sample: the stages `curriculum` (n_seg of each, stage_iters iterations each), then n_seg to the end.
Without --n_seg a memoGPT trains on 2 segments per sample for a quarter of max_iters, then on 4.
"""
import math
import os
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
from torch.distributed import all_reduce, barrier, broadcast, destroy_process_group, init_process_group
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from checkpoint import FORMAT, Run, load_model, resume, rng_states
from common import autocast, check_disk, check_memory
from configurator import (at_least, check, configure, device_ok, dtype_ok, ints_at_least, pool_ok, seed_ok,
                          writable_dir)
from data import inputs_targets, load_meta, open_split, sample_batch
from evaluate import recall_accuracy, val_losses
from model import GPT, GPTConfig
from training import MODEL_SETTINGS, check_run, cosine_lr, read_samples, stage_at, train_step

# I/O
out_dir = "out"
eval_interval = 250      # iterations between evaluations (each also writes out_dir/ckpt.pt)
eval_iters = 20          # val batches for the val loss
recall_samples = 500     # recall set: val samples scored for accuracy by distance
eval_ltm = None          # LTM snapshots kept at evaluation; None = as trained (the LTM's size adds no parameters)
eval_only = False        # evaluate once and exit
log_interval = 10        # iterations between readings of the training loss (each waits for the device)
init_from = "scratch"    # scratch | resume (out_dir/ckpt.pt) | gpt2, gpt2-medium, ... | a local HF directory
overwrite = False        # a new run (not resume) into an out_dir that holds a run: True replaces it (else it stops)
# data
dataset = "openwebtext"  # data/<dataset>/, made by prepare.py --dataset=<dataset> (or --name=<dataset>)
gradient_accumulation_steps = 1  # over all processes: each of N DDP processes does 1/N of them
batch_size = 8           # samples per micro-step
seg_len = 1024           # tokens per segment
n_seg = 0                # segments per sample in the last curriculum stage; 0 = 1 (plain GPT), 4 (memoGPT)
curriculum = ()          # n_seg of the stages before, e.g. (1, 2, 4); () = n_seg from the start
stage_iters = 0          # iterations per curriculum stage
answer_loss = False      # recall set: loss on the answer tokens only (all else is noise to predict)
# model (scratch; resume takes the checkpoint's, gpt2* the pretrained shape)
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = True
mem_len = 0              # short-term memory slots; 0 = plain GPT
block_size = 0           # positions (0 = seg_len); a plain GPT with n_seg * seg_len reads whole samples
ltm = 0                  # long-term memory snapshots
dual_ffn = True
pool = "route"           # what a write slot starts from: route (pairs won by content) | parts (its part of the segment)
bptt = 0                 # segments gradients reach back through the memory; 0 = all
ltm_drop = 0.25          # share of training iterations read with no LTM: the STM learns to answer, and carry, alone
recompute = False        # recompute each segment in the backward pass: less activation memory, more work
# AdamW, cosine learning rate with linear warmup
learning_rate = 6e-4
max_iters = 5000
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0          # 0 = no clipping
warmup_iters = 100
lr_decay_iters = 5000    # ~max_iters, as in Chinchilla
min_lr = 6e-5            # ~learning_rate / 10
decay_lr = True
# system
device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = ("bfloat16" if torch.cuda.is_bf16_supported() else "float16") if torch.cuda.is_available() else "float32"
compile = False          # torch.compile the model
threads = 0              # CPU threads for torch (0 = its default); 1 when other processes share the cores
seed = 1337
config, given = configure(globals())
# every setting's rule, in one place: the first one broken stops the run with one line
check(config, {
    **{k: at_least(1) for k in ("batch_size", "gradient_accumulation_steps", "seg_len", "eval_interval", "eval_iters",
                                "log_interval", "recall_samples")},
    **{k: at_least(0) for k in ("n_seg", "stage_iters", "max_iters", "warmup_iters", "bptt", "block_size", "threads",
                                "weight_decay")},
    "curriculum": ints_at_least(1, "the n_seg of the stages before, a tuple of ints >= 1 like (1, 2)", empty=True),
    "learning_rate": lambda v: 0 < v < math.inf or "must be > 0 and finite",
    "min_lr": lambda v: 0 <= v <= learning_rate or f"must be >= 0 and <= learning_rate ({learning_rate})",
    "lr_decay_iters": lambda v: (type(v) is int and v >= 0 and (not decay_lr or v >= warmup_iters)
                                 or f"must be >= warmup_iters ({warmup_iters}): the cosine decay follows the warmup"),
    **{k: (lambda v: 0 <= v < 1 or "must be in [0, 1)") for k in ("beta1", "beta2", "dropout")},
    "grad_clip": at_least(0, " (0 = no clipping): a negative norm would step uphill"),
    "ltm_drop": lambda v: 0 <= v <= 1 or "must be in [0, 1]: the share of iterations read with no LTM",
    "dataset": lambda v: bool(v) and v.strip() == v or "a dataset name under data/, e.g. recall",
    "init_from": lambda v: bool(v) or "scratch, resume, gpt2* or a local HF directory",
    "overwrite": lambda v: not (v and init_from == "resume") or (
        "--init_from=resume continues the run in out_dir, --overwrite=True replaces it with a new one: choose one"),
    "eval_ltm": lambda v: (v is None or type(v) is int and v >= 0
                           or "the LTM snapshots kept at evaluation, an int >= 0, for a model with memory"),
    "seed": seed_ok,
    "pool": pool_ok,
    "device": device_ok,
    "dtype": dtype_ok(device),
    "out_dir": writable_dir("output directory"),
})
if threads:
    torch.set_num_threads(threads)

# DDP under torchrun: NCCL between GPUs, gloo between CPU processes
ddp = int(os.environ.get("RANK", -1)) != -1
if ddp:
    rank, local_rank, world = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
else:
    rank, world = 0, 1
master = rank == 0
if gradient_accumulation_steps % world:
    raise SystemExit(f"gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple of the "
                     f"{world} processes")
accum = gradient_accumulation_steps // world
device_type = "cuda" if device.startswith("cuda") else "cpu"
ctx = autocast(device_type, dtype)

data_dir = os.path.join("data", dataset)
run = Run(out_dir, init_from == "resume", overwrite)  # a new run never replaces a run unless told to
try:
    meta = load_meta(data_dir)
    train_data, val_data = open_split(data_dir, meta, "train"), open_split(data_dir, meta, "val", check_ids=True)
except (OSError, ValueError) as e:
    raise SystemExit(str(e)) from None
recall = meta["tokenizer"] == "recall"

# model
ckpt = None
torch.manual_seed(seed + rank)  # the initial weights (DDP copies rank 0's to all), then dropout
try:
    if init_from == "scratch":  # vocab padded up to a multiple of 64, which is faster
        gptconf = GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size or seg_len,
                            bias=bias, vocab_size=-(-meta["vocab_size"] // 64) * 64, dropout=dropout, mem_len=mem_len,
                            ltm=ltm, seg_len=seg_len, dual_ffn=dual_ffn, pool=pool)
        with torch.device("meta"):  # its shape alone first: a model too large for memory stops before it is made
            check_memory(GPT(gptconf), batch_size, device)
        model = GPT(gptconf)
    elif init_from == "resume":
        model, ckpt = load_model(run.ckpt_path, device)
    else:  # pretrained GPT-2 with the memory added on top
        model = GPT.from_pretrained(init_from, dropout=dropout, mem_len=mem_len, ltm=ltm, seg_len=seg_len,
                                    dual_ffn=dual_ffn, pool=pool)
except (OSError, ValueError) as e:
    raise SystemExit(str(e)) from None
if init_from != "scratch":  # a loaded model: its optimizer and attention still to come (a scratch one's shape was
    check_memory(model, batch_size, device)  # checked before it was made)
# from here each model setting is the model's (a loaded model keeps its own: check_run refuses a setting given
# for another); config keeps what was given until the run is checked
n_layer, n_head, n_embd, dropout, bias, mem_len, ltm, dual_ffn, pool, block_size = (
    getattr(model.config, k) for k in MODEL_SETTINGS)
n_seg_chosen = n_seg == 0
if n_seg_chosen:  # by the model's mem_len: one segment per sample never reads what the memory wrote, and memory is
    # learned at distance 1 first, so 2 segments for a quarter of the run, then 4
    n_seg = 4 if mem_len else 1
    if mem_len and not curriculum:
        curriculum, stage_iters = (2,), stage_iters or max(1, max_iters // 4)
stages = (*curriculum, n_seg)
config.update(n_seg=n_seg, curriculum=curriculum, stage_iters=stage_iters)
check_run(config, given, model.config, ckpt, meta, {"train": train_data, "val": val_data})
config.update({k: getattr(model.config, k) for k in MODEL_SETTINGS})  # what the checkpoint says was trained
if n_seg_chosen and mem_len and master:
    print(f"memoGPT without --n_seg: {' -> '.join(map(str, stages))} segments per sample, {stage_iters} iterations "
          "per stage before the last (--n_seg, --curriculum and --stage_iters choose others)")
if master:  # the out_dir is this run's from here
    run.open(None if ckpt is None else ckpt["iter_num"])
    if not eval_only:  # before the work: a checkpoint is the weights and AdamW's two moments, fp32
        check_disk(run.ckpt_path, 12 * sum(p.numel() for p in model.parameters()), "the checkpoint")
model.to(device)
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
scaler = torch.amp.GradScaler(device_type, enabled=dtype == "float16")
# batches come from one generator, the same on every process: each takes its share of the global
# batch, so N processes draw the same samples as one process with N times the accumulation
batch_rng = np.random.default_rng(seed)
iter_num, best_val_loss = 0, float("inf")
if ckpt is not None:
    iter_num, best_val_loss = resume(ckpt, optimizer, scaler, batch_rng, rank, world, device_type)
    ckpt = None  # free memory
raw_model = model
if compile:
    model = torch.compile(model)
if ddp:
    # a 1-segment stage skips the write slots (nothing reads them): their parameters get no gradient
    model = DDP(model, device_ids=[local_rank] if device_type == "cuda" else None, find_unused_parameters=mem_len > 0)
eval_model = model.module if ddp else model


def get_lr(it):
    return cosine_lr(it, learning_rate, min_lr, warmup_iters, lr_decay_iters) if decay_lr else learning_rate


def n_seg_at(it):  # the curriculum: segments per sample at iteration it
    return stages[stage_at(it, curriculum, stage_iters)]


def get_batch(rng, shards, n, segs):
    """n samples of segs segments: (x, y) on the device. Recall: whole samples cut to segs segments."""
    try:  # a token id beyond the vocabulary (a damaged shard) stops here, not as an IndexError in the model
        rows = sample_batch(shards, rng, n, segs * seg_len, meta["sample_len"] if recall else 0, meta["vocab_size"])
    except ValueError as e:
        raise SystemExit(str(e)) from None
    x, y = (torch.from_numpy(a) for a in inputs_targets(rows, meta, answer_loss))
    if device_type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


@torch.no_grad()
def evaluate(segs):
    """The val loss by segment on fixed val batches; on a text set, a model that reads past a segment (memoGPT, or a
    plain GPT reading whole samples) also with every segment read alone; on the recall set, accuracy by distance."""
    eval_model.eval()
    rng = np.random.default_rng(seed)  # the same batches every time, apart from the training stream
    batches = [get_batch(rng, val_data, batch_size, segs) for _ in range(eval_iters)]
    out = val_losses(eval_model, batches, seg_len, (mem_len or block_size > seg_len) and not recall, ctx, eval_ltm)
    if recall:
        with ctx:
            acc = recall_accuracy(eval_model, val_data[0], meta, recall_samples, batch_size, device, ltm_size=eval_ltm)
        out["recall_accuracy"] = {d: round(a, 4) for d, a in acc.items()}
    eval_model.train()
    return out


def log_eval(train_loss, tokens_per_s):
    global best_val_loss
    segs = n_seg_at(max(iter_num - 1, 0))  # the n_seg just trained
    record = {"iter": iter_num, "n_seg": segs, "eval_ltm": ltm if eval_ltm is None else eval_ltm,
              "lr": get_lr(iter_num), "train_loss": train_loss, **evaluate(segs), "tokens_per_s": round(tokens_per_s),
              "elapsed_s": round(time.time() - t_start, 1)}
    if mem_len:  # how the gate and the LTM's age slopes move (lab/diagnose.py measures a checkpoint's keep per segment)
        # the keep is sigmoid(mem_keep + mem_gate(new)), per sample: keep_bias is the keep where the content term is
        # zero, gate_norm how far the content term has grown from its zero init
        record["keep_bias"] = [round(k, 4) for k in torch.sigmoid(raw_model.mem_keep).tolist()]
        record["gate_norm"] = round(raw_model.mem_gate.weight.norm().item(), 4)
        record["ltm_age"] = [[round(a, 3) for a in layer] for layer in raw_model.ltm_age.tolist()]
    best_val_loss = min(best_val_loss, record["val_loss"])
    tqdm.write(f"iter {iter_num}: n_seg {segs}" + (f", ltm {eval_ltm}" if eval_ltm is not None else "")
               + f", val loss {record['val_loss']:.4f}, by segment {record['val_loss_by_segment']}"
               + (f", every segment read alone (memory reset) {record['val_loss_by_segment_reset']} (gain "
                  f"{record['memory_gain_by_segment']})" if "memory_gain_by_segment" in record else "")
               + (f", recall accuracy by distance {record['recall_accuracy']}" if recall else ""))
    run.log(record)
    return record


def save_checkpoint():
    rng = rng_states(batch_rng, device_type, world)  # every process's, so a resume continues each exactly
    if master:
        run.save({"format": FORMAT, "model": raw_model.state_dict(), "model_args": asdict(raw_model.config),
                  "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "iter_num": iter_num,
                  "best_val_loss": best_val_loss, "config": config, "meta": meta, "rng": rng,
                  "stage": stage_at(iter_num, curriculum, stage_iters), "n_seg": n_seg_at(iter_num)})


def stop_unless_finite(loss, what, no_targets=False):
    if not math.isfinite(loss):
        bar.close()
        kept = run.kept() if master else ""
        if no_targets:  # the val loss is then nan, and no fault of the learning rate
            raise SystemExit(f"iter {iter_num}: the {eval_iters} val batches of {batch_size} samples hold no target to "
                             f"score (answer_loss: no question in their first {n_seg_at(max(iter_num - 1, 0))} "
                             f"segments); stopped ({kept}). Raise --eval_iters or --batch_size")
        wider = {"float16": ", or use dtype=bfloat16/float32", "bfloat16": ", or use dtype=float32"}.get(dtype, "")
        raise SystemExit(f"iter {iter_num}: {what} is {loss}; stopped ({kept}). "
                         f"Lower learning_rate or raise warmup_iters{wider}" if master else 1)


t_start = time.time()
if eval_only:
    if master:
        log_eval(None, 0)
        run.close()
    raise SystemExit(0)
if master and iter_num >= max_iters and init_from == "resume":
    print(f"{run.ckpt_path} is at iteration {iter_num}, max_iters={max_iters}: nothing to train (raise --max_iters)")
if master:  # before the bar starts, on a line of its own
    print(f"{raw_model.get_num_params() / 1e6:.2f}M parameters; curriculum n_seg {stages} x {stage_iters} iterations; "
          f"{gradient_accumulation_steps * batch_size} samples per iteration", flush=True)
# no bar in a redirected log (it would be one long line of carriage returns): the evaluation lines show progress
bar = tqdm(total=max_iters, initial=iter_num, disable=not master or not sys.stderr.isatty(), dynamic_ncols=True)
train_loss, tokens, t_eval = None, 0, time.time()
logged = iter_num if init_from == "resume" else -1  # a resumed checkpoint's evaluation is in log.jsonl already
while True:
    segs = n_seg_at(iter_num)
    if (iter_num % eval_interval == 0 or iter_num == max_iters) and iter_num != logged:
        record = (log_eval(None if train_loss is None else train_loss.item(), tokens / (time.time() - t_eval))
                  if master else {"val_loss": 0.0})
        val_loss = record["val_loss"]
        if ddp:  # only the master evaluates: the others learn its val loss to stop with it
            val_loss = torch.tensor(val_loss, device=device)
            broadcast(val_loss, 0)
            val_loss = val_loss.item()
        stop_unless_finite(val_loss, "val loss", master and all(v is None for v in record["val_loss_by_segment"]))
        if iter_num > 0:
            save_checkpoint()
        tokens, t_eval = 0, time.time()
    if iter_num >= max_iters:
        break
    # the global batch, drawn in full so every process stays in step; this process's micro-batches are its share
    x_all, y_all = get_batch(batch_rng, train_data, gradient_accumulation_steps * batch_size, segs)
    batches = [(x_all[i * batch_size:(i + 1) * batch_size], y_all[i * batch_size:(i + 1) * batch_size])
               for i in range(rank * accum, (rank + 1) * accum)]
    # drawn from the batches' generator (saved with the checkpoint), so a resumed run draws the same
    ltm_size = 0 if mem_len and ltm and ltm_drop and batch_rng.random() < ltm_drop else None
    train_loss = train_step(model, optimizer, scaler, get_lr(iter_num), grad_clip, batches, ctx=ctx,
                            loss_of=lambda m, x, y: read_samples(m, x, y, seg_len, bptt=bptt, ltm_size=ltm_size,
                                                                 recompute=recompute)[1])
    if ddp:
        all_reduce(train_loss)
        train_loss /= world
    if iter_num % log_interval == 0:  # reading the loss waits for the device
        stop_unless_finite(train_loss.item(), "training loss")
        bar.set_postfix(loss=f"{train_loss.item():.4f}", n_seg=segs, lr=f"{get_lr(iter_num):.1e}")
    tokens += x_all.numel()
    iter_num += 1
    bar.update(1)
bar.close()
if master:
    run.close()
if ddp:
    barrier()  # tearing down while rank 0 still writes the checkpoint aborts the process in gloo (~5% of runs)
    destroy_process_group()
