"""
One training step, as train.py takes it (and bench.py and lab/capacity.py with it): how a batch of samples is
read (read_samples, also in every evaluation), the curriculum stage and the learning rate at an iteration
(stage_at, cosine_lr), and the step (train_step: forward and backward over the micro-batches, then
optimizer_step). Before any of it, train.py's check_run: the settings, the model and the data against each other.
"""
import math
import os

import torch
from torch.nn.parallel import DistributedDataParallel

from data import check_room, differs

# the settings that make a model: a loaded one (resume, gpt2*) keeps its own
MODEL_SETTINGS = ("n_layer", "n_head", "n_embd", "dropout", "bias", "mem_len", "ltm", "dual_ffn", "pool",
                  "block_size")


def check_run(config, given, model_config, ckpt, meta, splits):
    """Before any work, train.py's settings (config; given: those set on its command line or in a config file), its
    model and checkpoint (ckpt: None for a new model) and its data (meta; splits: name -> shards) against each
    other; the first mismatch stops the run with one line. A resume reads the data it was trained on, and a
    loaded model keeps its shape; the model reads the data's segments and vocabulary; every stage's samples fit."""
    c, m = config, model_config
    init_from, seg_len, recall = c["init_from"], c["seg_len"], meta["tokenizer"] == "recall"
    data_dir, stages = os.path.join("data", c["dataset"]), (*c["curriculum"], c["n_seg"])
    loaded = os.path.join(c["out_dir"], "ckpt.pt") if init_from == "resume" else init_from
    if ckpt is not None and differs(ckpt["meta"], meta):
        raise SystemExit(f"{data_dir} is not the data {loaded} was trained on ({', '.join(differs(ckpt['meta'], meta))}"
                         f" differ; it trained on --dataset={ckpt['config'].get('dataset', '?')}): resume on that set "
                         "as it was, or start a new run in another --out_dir")
    refused = [k for k in MODEL_SETTINGS if init_from != "scratch" and k in given
               and getattr(m, k) != ((c[k] or seg_len) if k == "block_size" else c[k])]
    if refused:
        raise SystemExit(f"{' '.join(f'--{k}={c[k]}' for k in refused)}: {loaded} has "
                         f"{', '.join(f'{k}={getattr(m, k)}' for k in refused)}, and "
                         f"--init_from={init_from} keeps the model it loads: drop these settings"
                         + (" (--eval_ltm evaluates it with another LTM size)" if "ltm" in refused else ""))
    if c["eval_ltm"] is not None and not m.mem_len:
        raise SystemExit(f"--eval_ltm={c['eval_ltm']}: the LTM snapshots kept at evaluation, an int >= 0, for a model "
                         "with memory (this one has mem_len=0)")
    if m.mem_len and m.seg_len != seg_len:
        raise SystemExit(f"the {init_from} model reads segments of {m.seg_len} tokens: pass --seg_len={m.seg_len}")
    if m.vocab_size < meta["vocab_size"] or seg_len > m.block_size:
        raise SystemExit(f"the {init_from} model (vocab {m.vocab_size}, block_size {m.block_size}) cannot "
                         f"read {c['dataset']} (vocab {meta['vocab_size']}) in segments of seg_len={seg_len}")
    if c["answer_loss"] and not recall:
        raise SystemExit(f"answer_loss needs the recall set; {c['dataset']} has no answers")
    if recall and (seg_len != meta["seg_len"] or max(stages) > meta["n_seg"]):
        raise SystemExit(f"{data_dir} holds samples of {meta['n_seg']} segments of {meta['seg_len']} tokens: train "
                         f"with --seg_len={meta['seg_len']} and n_seg <= {meta['n_seg']}, or remake it with prepare.py")
    if c["curriculum"] and c["stage_iters"] < 1:
        raise SystemExit(f"curriculum {c['curriculum']} needs --stage_iters, the iterations of each stage")
    if c["answer_loss"] and min(stages) < 2:
        raise SystemExit(f"with answer_loss, every curriculum stage needs n_seg >= 2 (the first question is in "
                         f"segment 1), got n_seg stages {stages}")
    try:
        for split, shards in splits.items():
            check_room(shards, max(stages) * seg_len, meta["sample_len"] if recall else 0,
                       f"the {split} split of {data_dir}")
    except ValueError as e:
        raise SystemExit(str(e)) from None


def read_samples(model, x, y, seg_len, carry=True, bptt=0, ltm_size=None, recompute=False):
    """
    How a batch of samples (B, n_seg * seg_len) is read, in training and in every evaluation. memoGPT:
    segment by segment, its memory carried across (bptt, ltm_size, recompute: as in GPT.forward; the
    memory after the sample is not kept, so its last write is skipped). The plain GPT (mem_len=0): the
    whole sample as one window if it fits its block_size, else each segment as its own window (the
    segment a token is in: what memoGPT's tokens attend to besides the memory). carry=False: each
    segment alone, from an empty memory, for either. model may be wrapped (DDP, torch.compile): it is
    called, never reached into. Returns logits, loss.
    """
    B, T = x.shape
    cfg = getattr(model, "module", model).config
    if carry and cfg.mem_len > 0:
        logits, loss, _ = model(x, y, bptt=bptt, ltm_size=ltm_size, recompute=recompute, need_mem=False)
        return logits, loss
    window = T if carry and T <= cfg.block_size else seg_len
    logits, loss, _ = model(x.reshape(-1, window), None if y is None else y.reshape(-1, window),
                            recompute=recompute, need_mem=False)
    return logits.view(B, T, -1), loss


def stage_at(it, curriculum, stage_iters):
    """The curriculum stage of iteration it: stage_iters iterations in each of the curriculum's stages, then the
    last one (index len(curriculum): n_seg segments per sample) to the end."""
    return min(it // stage_iters, len(curriculum)) if curriculum else 0


def cosine_lr(it, learning_rate, min_lr, warmup_iters, lr_decay_iters):
    """Linear warmup, then cosine decay to min_lr at lr_decay_iters (nanoGPT's schedule)."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def train_step(model, optimizer, scaler, lr, grad_clip, batches, loss_of, ctx):
    """One optimizer step at learning rate lr: for each micro-batch (x, y), loss_of(model, x, y) under ctx
    (autocast), divided by their number and back-propagated; then optimizer_step. Returns the summed loss, on the
    device (reading it waits for the device). Under DDP the gradients are all-reduced at the last micro-batch only."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss_sum = torch.zeros((), device=batches[0][0].device)
    for i, (x, y) in enumerate(batches):
        if isinstance(model, DistributedDataParallel):
            model.require_backward_grad_sync = i == len(batches) - 1
        with ctx:
            loss = loss_of(model, x, y)
        loss = loss / len(batches)
        loss_sum += loss.detach()
        scaler.scale(loss).backward()
    optimizer_step(model, optimizer, scaler, grad_clip)
    return loss_sum


def optimizer_step(model, optimizer, scaler, grad_clip):
    """After the backward pass(es): unscale (fp16), clip the gradient norm (0 = no clipping), step, clear."""
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
