"""
One training step, as train.py takes it (and bench.py and lab/capacity.py with it): how a batch of samples is
read (read_samples, also in every evaluation), the curriculum stage and the learning rate at an iteration
(stage_at, cosine_lr), and the step (train_step: forward and backward over the micro-batches, then
optimizer_step).
"""
import math

import torch
from torch.nn.parallel import DistributedDataParallel


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
