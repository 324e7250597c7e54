"""
What the scripts share, one of each: the autocast context, the atomic file write, the checks of room on
disk and in memory, the lock on an output directory, the machine's name, and the markdown table.
"""
import atexit
import errno
import os
import platform
import shutil
import socket
from contextlib import nullcontext

import torch


def autocast(device_type, dtype):
    """bf16/fp16 autocast on the device, or nothing for float32."""
    if dtype == "float32":
        return nullcontext()
    return torch.amp.autocast(device_type, dtype=getattr(torch, dtype))


def write_atomic(path, write, binary=False):
    """write(f) into a temp file beside path, then rename: readers see the whole file or the old one. A write the
    system refuses (a full disk, a read-only place) stops with one line, the old file kept."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb" if binary else "w", newline=None if binary else "") as f:
            write(f)
        os.replace(tmp, path)
    except Exception as e:
        cause = e
        while cause is not None and not isinstance(cause, OSError):  # torch.save wraps it in a RuntimeError
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        written = os.path.getsize(tmp) if os.path.isfile(tmp) else 0
        raise SystemExit(f"{cannot_write(path, cause, more_than=written)}; {path} is as it was") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def cannot_write(path, e, need=0, more_than=0):
    """One line for an OSError e met writing path; a full disk names the room there and, where known, the bytes
    needed (need) or a lower bound (more_than: what was written before it filled)."""
    if e.errno != errno.ENOSPC:
        return f"cannot write {path}: {e.strerror or e}"
    needed = f", {need:,} needed" if need else f", more than {more_than:,} needed" if more_than else ""
    return (f"cannot write {path}: the disk is full ({free_bytes(path):,} bytes free{needed}): free space, or write "
            "elsewhere")


def free_bytes(path):
    """Free bytes on the disk that holds path (or would: its nearest existing parent)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def check_disk(path, need, what):
    """Stop with one line, before the work, when the disk that will hold path has less than need bytes free."""
    free = free_bytes(path)
    if free < need:
        raise SystemExit(f"{what} needs about {need:,} bytes at {path}, its disk has {free:,} free: free space, or "
                         "write elsewhere")


def check_memory(model, batch_size, device):
    """Stop with one line when a model (its shape is enough: a meta-device model) cannot be trained in the device's
    memory, the GPU's or the machine's RAM: its parameters (16 bytes each with AdamW in fp32: weights, gradients, two
    moments) and one layer's attention scores for a batch (fp32). A lower bound: what else the run keeps comes on
    top."""
    cfg, n = model.config, sum(p.numel() for p in model.parameters())
    rows = 2 * cfg.mem_len + cfg.seg_len if cfg.mem_len else cfg.block_size  # [R | X | W], or a plain GPT's window
    scores = batch_size * cfg.n_head * rows * (cfg.ltm * cfg.mem_len + rows) * 4
    need = 16 * n + scores
    if device.startswith("cuda"):
        have, where = torch.cuda.get_device_properties(device).total_memory, f"the GPU ({device})"
    else:
        have, where = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's RAM"
    if need > have:
        raise SystemExit(f"this model needs at least {need / 2**30:,.1f} GiB ({n:,} parameters, {scores / 2**30:,.1f} "
                         f"GiB of attention scores per layer for a batch of {batch_size}), {where} has "
                         f"{have / 2**30:,.1f} GiB: choose a smaller n_embd, n_layer, mem_len, seg_len or batch_size")


def pid_alive(pid):
    """Whether a process with this PID runs (another user's counts)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # none, or no PID at all
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def lock_dir(directory, what="train.py"):
    """Hold directory/LOCK for this process (its PID and host in it) until it exits; a second process stops with
    one line naming the owner. A lock left by a dead process (or by this one: a script rerun in one process) is
    taken over. Returns the lock's path."""
    path = os.path.join(directory, "LOCK")
    host, me = socket.gethostname(), os.getpid()
    for _ in range(3):
        try:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if os.path.isdir(path):
                raise SystemExit(f"{path} is a directory, not a lock: remove it, or choose another directory") from None
            try:
                with open(path) as f:
                    pid, _, owner_host = f.read().strip().partition(" ")
                pid = int(pid)
                if pid <= 0:  # no process's: garbage (os.kill(-1, 0) would ask about every process)
                    raise ValueError(pid)
            except (OSError, ValueError):  # vanished meanwhile, half written or garbage: taken over
                pid, owner_host = None, host
            if pid is not None and (owner_host != host or (pid != me and pid_alive(pid))):
                where = f" on {owner_host}" if owner_host != host else ""
                raise SystemExit(f"{directory} is in use by process {pid}{where} ({path}): wait for it to end, or "
                                 f"choose another directory (a lock left by a process that died is taken over)")
            try:
                os.remove(path)  # its owner is dead: take it over
            except FileNotFoundError:
                pass
            continue
        except OSError as e:  # a read-only place, a file in the way, /proc
            raise SystemExit(f"cannot lock {directory} ({path}): {e.strerror}: choose another directory") from None
        try:
            with os.fdopen(fd, "w") as f:
                f.write(f"{me} {host}\n")
        except OSError as e:  # a full disk: no lock is left half written
            os.remove(path)
            raise SystemExit(cannot_write(path, e)) from None
        atexit.register(unlock_dir, path)
        return path
    raise SystemExit(f"could not take the lock {path}: another process keeps taking it")


def unlock_dir(path):
    """Remove a lock lock_dir took, if this process still holds it."""
    try:
        with open(path) as f:
            if f.read().split(" ")[0] == str(os.getpid()):
                os.remove(path)
    except (OSError, ValueError):
        pass


def machine(device="cpu"):
    """The GPU's name, or the CPU's model and core count."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    name = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    return f"{name}, {os.cpu_count()} cores"


def table(header, rows):
    """A markdown table: the header's cells, then a line per row."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])
