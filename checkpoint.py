"""
What a run leaves on disk, and the checks that read it back: the checkpoint train.py writes (load_checkpoint,
load_model; rng_states and resume continue a run exactly), the run's directory with its log and lock (Run), and
the memory files sample.py saves (save_memory, load_memory). A file that is missing, damaged or another model's
stops with one line, never a traceback, and nothing in it runs as code (torch.load(weights_only=True)).
"""
import glob
import hashlib
import json
import os
import pickle
import sys

import torch
from torch.distributed import all_gather_object

from common import cannot_write, lock_dir, unlock_dir, write_atomic
from memory import Memory
from model import GPT, GPTConfig

# --- checkpoints ---

FORMAT = 3  # 3 = issue 40's write gate reading the slot too: keep = sigmoid(b_j + w . [new, stm]); 2: w . new


def load_checkpoint(path, device="cpu"):
    """The dict train.py saved; a missing, damaged or foreign file raises one line (ValueError, FileNotFoundError)."""
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory, not a checkpoint: move it away, or choose another out_dir")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}: train one first, e.g. python train.py config/recall.py")
    try:  # tensors and plain Python values only: unpickling anything else could run the file's code
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path} was not loaded: it holds more than tensors and plain values (loading those "
                         "could run code in it), or it is damaged; load only checkpoints train.py wrote") from None
    except Exception as e:
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: damaged, truncated or "
                         "empty?): train again, or restore it") from None
    if not isinstance(ckpt, dict) or not {"model", "model_args"} <= ckpt.keys():
        raise ValueError(f"{path} is not a checkpoint train.py wrote (no model and model_args in it)")
    ckpt["model_args"].setdefault("pool", "parts")  # written before the pool setting: the parts were all there was
    ckpt["model_args"].setdefault("route_null_query", False)  # written before them: the null was a logit alone,
    ckpt["model_args"].setdefault("route_alloc", 0)  # and any pair could go to any slot
    return ckpt


def load_model(path, device="cpu"):
    """The model a checkpoint holds (out_dir/ckpt.pt), and the whole checkpoint dict. A checkpoint of another
    FORMAT is refused: an older model.py's has the same parameters, which this one would read as another gate,
    and other optimizer groups (a plain GPT's too)."""
    ckpt = load_checkpoint(path, device)
    if ckpt.get("format") != FORMAT:  # the same parameter names and shapes, read by another gate
        raise ValueError(f"{path} was written by an older model.py (another memory gate or weight-decay "
                         "groups, issue 40): it would be read wrongly; train it again")
    try:  # torch.compile saves its parameters under an _orig_mod. prefix
        model = GPT(GPTConfig(**ckpt["model_args"]))
        model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    except (RuntimeError, TypeError):
        raise ValueError(f"{path}: its weights do not fit its model_args (damaged, or written by another version of "
                         "model.py: train it again)") from None
    return model.to(device), ckpt


def warn_if_memory_never_read(ckpt, path):
    """One line on stderr for a memoGPT checkpoint trained on one segment per sample (n_seg 1, no curriculum): its
    memory was written, never read back."""
    cfg = ckpt.get("config", {})
    if ckpt["model_args"]["mem_len"] and max((*cfg.get("curriculum", ()), cfg.get("n_seg", 2))) == 1:
        print(f"warning: {path} was trained on one segment per sample (n_seg=1, no curriculum): its memory was "
              "never read in training", file=sys.stderr)


def rng_states(batch_rng, device_type, world):
    """The random states a resume continues from: the batches' generator, and every process's torch (dropout) and
    CUDA generators, gathered from all processes under DDP (every process calls this)."""
    rng = {"batches": batch_rng.bit_generator.state, "torch": [torch.get_rng_state()],
           "cuda": [torch.cuda.get_rng_state()] if device_type == "cuda" else []}
    if world > 1:
        for k in ("torch", "cuda"):
            states = [None] * world
            all_gather_object(states, rng[k])
            rng[k] = [s for per_rank in states for s in per_rank]
    return rng


def resume(ckpt, optimizer, scaler, batch_rng, rank, world, device_type):
    """Continue exactly where a checkpoint stopped: AdamW's moments, the loss scale, the batches' generator and, with
    as many processes as saved it, each one's dropout stream. Returns the iteration and the best val loss."""
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    batch_rng.bit_generator.state = ckpt["rng"]["batches"]
    if len(ckpt["rng"]["torch"]) == world:
        torch.set_rng_state(ckpt["rng"]["torch"][rank])
        if device_type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"][rank])
    return ckpt["iter_num"], ckpt["best_val_loss"]


# --- a run's directory: out_dir/ckpt.pt, log.jsonl, LOCK ---


class Run:
    """A training run's out_dir. A new run never replaces a run it did not make unless told to (overwrite), and then
    only at its own first checkpoint: until then it logs beside the old run (log.jsonl.<id>.new), so a run that saves
    nothing leaves the old one as it was. The checkpoint names its run, so a kill between the checkpoint's rename and
    the log's is settled by the next run."""

    def __init__(self, out_dir, resume, overwrite):
        self.out_dir, self.id = out_dir, os.urandom(6).hex()
        self.ckpt_path, self.log_path = os.path.join(out_dir, "ckpt.pt"), os.path.join(out_dir, "log.jsonl")
        self.new_log = f"{self.log_path}.{self.id}.new"
        held = next((p for p in (self.ckpt_path, self.log_path) if os.path.exists(p)), None)
        if os.path.lexists(self.ckpt_path) and not os.path.isfile(self.ckpt_path):
            raise SystemExit(f"{self.ckpt_path} is not a file (a directory?): move it away, or choose another "
                             "--out_dir")
        if held and not resume and not overwrite:
            raise SystemExit(f"{out_dir} holds a run ({held}): resume it with --init_from=resume, choose another "
                             "--out_dir, or replace it with --overwrite=True")
        self.replacing = bool(held) and overwrite
        self.lock = None

    def open(self, resumed_iter=None):
        """Take the out_dir (a second run on it stops with one line; a lock left by a dead one is taken over) and
        clean up after a killed run: its temp checkpoint, its unsettled log, what it logged after its last save."""
        self.lock = lock_dir(self.out_dir)
        for tmp in glob.glob(glob.escape(self.ckpt_path) + ".*tmp"):
            os.remove(tmp)  # the lock says none is saving now
        for new in glob.glob(glob.escape(self.log_path) + ".*.new"):  # a replacing run's log: kept if it saved
            try:
                saved = load_checkpoint(self.ckpt_path).get("run") == new.rsplit(".", 2)[-2]
            except (OSError, ValueError):
                saved = False
            if saved:
                os.replace(new, self.log_path)
            else:
                os.remove(new)
        if resumed_iter is not None:
            self.trim_log(resumed_iter)

    def trim_log(self, iter_num):
        """Keep the log's records up to iter_num (the checkpoint's): a run killed after an evaluation and before its
        save logged one that its resume logs again, and a kill can cut a line."""
        if not os.path.isfile(self.log_path):
            return
        keep = []
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    if json.loads(line)["iter"] <= iter_num:
                        keep.append(line.rstrip("\n") + "\n")
                except (ValueError, KeyError, TypeError):
                    pass
        write_atomic(self.log_path, lambda f: f.writelines(keep))

    def log(self, record):
        try:
            with open(self.new_log if self.replacing else self.log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:  # a full disk: one line, the checkpoint as it was
            raise SystemExit(cannot_write(self.log_path, e)) from None

    def save(self, state):
        os.makedirs(self.out_dir, exist_ok=True)
        write_atomic(self.ckpt_path, lambda f: torch.save({**state, "run": self.id}, f), binary=True)
        if self.replacing:  # the new run has a checkpoint: its log replaces the old run's
            os.replace(self.new_log, self.log_path)
            self.replacing = False

    def kept(self):
        """What a run that ends early leaves: a replacing run that saved nothing drops its log, the old run stays."""
        if self.replacing:
            if os.path.exists(self.new_log):
                os.remove(self.new_log)
            return f"nothing saved: the run {self.out_dir} held is kept as it was"
        return (f"the last good checkpoint {self.ckpt_path} is kept" if os.path.exists(self.ckpt_path)
                else "no checkpoint saved")

    def close(self):
        if self.replacing:  # it saved nothing
            print(self.kept())
        unlock_dir(self.lock)


# --- memory files (sample.py --save_memory, --load_memory) ---

FLOATS = (torch.float32, torch.bfloat16, torch.float16)  # float32, or what autocast computes in
MAX_ABS = 1e4  # a memory the model writes stays far below (the STM is normalised; keys and values are projections)


def save_memory(mem, path, model):
    """Write atomically (temp name, then rename), marked with the model it belongs to."""
    state = {"made_by": model_signature(model), "stm": mem.stm.cpu(), "ltm": [s.cpu() for s in mem.snapshots],
             "n_seg": mem.n_seg, "segs": mem.segs}
    write_atomic(path, lambda f: torch.save(state, f), binary=True)


def load_memory(path, model, device="cpu", ltm_size=None):
    """A memory save_memory wrote for this model. ltm_size: the LTM size it will be read with (None = the model's):
    any fits the same weights."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no memory file at {path}: make one with sample.py --read=DOC --save_memory={path}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        made_by = state["made_by"]
        made_by["shape"], made_by["weights"]
    except Exception:
        raise ValueError(f"{path} is not a memory file: make one with sample.py --save_memory") from None
    want = model_signature(model)
    if made_by != want:
        what = "weights" if made_by["shape"] == want["shape"] else f"shape {made_by['shape']}"
        raise ValueError(f"memory file {path} was made by a model with other {what} (this one: {want['shape']}): "
                         "read the document again with this model")
    cfg, stm, snapshots, n_seg, segs = (model.config, state.get("stm"), state.get("ltm"), state.get("n_seg"),
                                        state.get("segs"))
    problem = memory_problem(stm, snapshots, n_seg, segs, cfg)
    if problem:
        raise ValueError(f"memory file {path} is damaged ({problem}): read the document again")
    keep = cfg.ltm if ltm_size is None else ltm_size
    if len(snapshots) > keep:
        raise ValueError(f"memory file {path} holds {len(snapshots)} LTM snapshots, more than the {keep} kept here: "
                         f"load it with ltm={len(snapshots)} (sample.py --ltm={len(snapshots)})")
    return Memory(stm, snapshots, n_seg, segs)


def memory_problem(stm, snapshots, n_seg, segs, cfg):
    """What is wrong with a loaded memory's parts for a model of config cfg, or None: float tensors of its shapes,
    finite and of a size a model writes; n_seg segments read, and the segment of each snapshot, increasing."""
    if not (isinstance(stm, torch.Tensor) and isinstance(snapshots, list)
            and all(isinstance(t, torch.Tensor) for t in snapshots)):
        return "its STM and LTM are not tensors"
    snapshot = (cfg.n_layer, 2, *stm.shape[:1], cfg.n_head, cfg.mem_len, cfg.n_embd // cfg.n_head)
    if (stm.dim() != 3 or stm.shape[1:] != (cfg.mem_len, cfg.n_embd)
            or any(s.shape != snapshot for s in snapshots)):
        return (f"its STM is {tuple(stm.shape)} and it has {len(snapshots)} snapshots, this model "
                f"needs (B, {cfg.mem_len}, {cfg.n_embd}) and snapshots of {snapshot}")
    wrong = sorted({str(t.dtype) for t in [stm] + snapshots if t.dtype not in FLOATS})
    if wrong:
        return f"it holds {', '.join(wrong)}, not float32, bfloat16 or float16"
    if not all(t.isfinite().all() for t in [stm] + snapshots):
        return "it holds NaN or infinite values"
    if any(t.abs().max() > MAX_ABS for t in [stm] + snapshots if t.numel()):
        return f"it holds values beyond {MAX_ABS:g} in magnitude, which attention would turn into NaN"
    if (type(n_seg) is not int or n_seg < 0 or not isinstance(segs, list)
            or not all(type(s) is int for s in segs) or len(segs) != len(snapshots)):
        return f"its segment count {n_seg!r} or snapshot segments {segs!r} do not fit its snapshots"
    if any(not 0 <= s < n_seg for s in segs) or any(a >= b for a, b in zip(segs, segs[1:])):
        return f"snapshot segments {segs} are not increasing segments of the {n_seg} read"
    return None


def model_signature(model):
    """What a memory must match to be read by a model: its shape, and a digest of its memory weights, the gate's
    included (they change with any training, so a memory from another checkpoint is caught too; the gate's init
    tells an untrained memory of GPT-2 from one an older model.py wrote, issue 40). Not the LTM size: its
    parameters are per layer and head, not per snapshot, so it can be chosen when the memory is read."""
    cfg = model.config
    shape = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd", "mem_len", "seg_len")}
    digest = hashlib.sha1()
    route = [model.mem_shift, model.route_null, *model.mem_route.parameters(), *model.ln_route.parameters(),
             *([model.route_null_q] if cfg.route_null_query else [])] if cfg.pool == "route" else []
    for p in (model.mem_init, model.mem_read, model.mem_write, model.ltm_age, model.mem_keep, model.mem_gate.weight,
              *model.ln_mem.parameters(), *route):
        digest.update(p.detach().float().cpu().numpy().tobytes())
    return {"shape": shape, "weights": digest.hexdigest()}
