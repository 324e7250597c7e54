"""
nanoGPT-style configuration: a script keeps its settings as module-level globals, then calls

    from configurator import configure
    config, given = configure(globals())

which applies, in order, config files given as plain arguments (python files that assign
settings, e.g. config/recall.py) and --key=value overrides, and returns the final settings as
a dict (for logging and checkpoints) and the set of keys a config file or the command line gave
(a resume tells a setting given from a default left alone). An unknown key or a value of the
wrong type stops the script with one line that names the key. Config files are run as Python
code (as in nanoGPT): use only your own.

Each script then checks its settings in one place, a table of rules:

    check(config, {"learning_rate": lambda v: v > 0 or "must be > 0", "seed": seed_ok, ...})

A rule returns True for a good value, else the reason; check stops with one line naming the first
setting that breaks its rule ("--learning_rate=-1: must be > 0"). The helpers below (at_least,
ints_at_least, seed_ok, device_ok, dtype_ok, writable_dir, ...) make the common rules; they are
functions, never tuples: a script's module-level tuple would be taken for one of its settings.
"""
import ast
import difflib
import math
import os
import sys


def _settings(scope):
    return {k: v for k, v in scope.items()
            if not k.startswith("_") and isinstance(v, (int, float, bool, str, type(None), tuple, list))}


def _check(key, value, settings, where):
    if key not in settings:
        close = difflib.get_close_matches(key, settings, n=1)
        hint = f" (did you mean --{close[0]}?)" if close else ""
        raise SystemExit(f"{where}: unknown setting '{key}'{hint}")
    default = settings[key]
    if default is None or value is None or type(value) is type(default):
        return value
    if isinstance(default, float) and type(value) is int:
        return float(value)
    raise SystemExit(f"{where}: {key} must be {type(default).__name__} like its default {default!r}, "
                     f"got {type(value).__name__} {value!r}")


def override(scope, overrides, where="setting"):
    """Apply {key: value} to scope (checked against the defaults there); returns the settings dict."""
    settings = _settings(scope)
    for key, value in overrides.items():
        if not key.startswith("_"):
            scope[key] = _check(key, value, settings, where)
    return _settings({k: scope[k] for k in settings})


def configure(scope, argv=None, quick=None):
    """The settings after config files and --key=value (argv: sys.argv[1:]), and the keys they gave. quick: the
    settings of a smoke test, applied first when --quick is given (the rest of the command line still overrides
    them). A bare --flag of a bool setting is --flag=True."""
    given = set()
    argv = [f"{a}=True" if a.startswith("--") and isinstance(scope.get(a[2:]), bool) else a
            for a in (sys.argv[1:] if argv is None else argv)]
    if quick is not None and "--quick=True" in argv:
        override(scope, quick, "--quick")
    for arg in argv:
        if not arg.startswith("--"):
            if "=" in arg and not os.path.isfile(arg):
                raise SystemExit(f"{arg}: write settings as --key=value")
            try:
                with open(arg, encoding="utf-8") as f:
                    code = compile(f.read(), arg, "exec")  # named, so errors in it point to the file
            except OSError as e:
                raise SystemExit(f"cannot read config file {arg}: {e.strerror}") from None
            except SyntaxError as e:
                raise SystemExit(f"config file {arg}, line {e.lineno}: {e.msg}") from None
            except (UnicodeDecodeError, ValueError):  # not UTF-8, or NUL bytes: not a Python file
                raise SystemExit(f"config file {arg} is not Python text (binary?): "
                                 "a config file assigns settings, e.g. n_layer = 6") from None
            assigned = {}
            try:
                exec(code, {}, assigned)  # a config file is Python, run as code: use only your own
            except SystemExit as e:  # exit() in a config file: it would end the script with nothing made
                raise SystemExit(f"config file {arg} calls exit({e.code!r}): a config file only assigns settings, "
                                 "e.g. n_layer = 6") from None
            except Exception as e:
                tb = e.__traceback__
                while tb.tb_next is not None:
                    tb = tb.tb_next
                line = f", line {tb.tb_lineno}" if tb.tb_frame.f_code.co_filename == arg else ""
                raise SystemExit(f"config file {arg}{line}: {type(e).__name__}: {e}".splitlines()[0]) from None
            override(scope, assigned, arg)
            given.update(k for k in assigned if not k.startswith("_"))
            continue
        key, sep, text = arg[2:].partition("=")
        if not sep and key in _settings(scope):  # else an unknown key says so below
            raise SystemExit(f"{arg}: write settings as --key=value")
        try:
            value = ast.literal_eval(text)
        except (SyntaxError, ValueError):
            value = text  # a bare word is a string
        override(scope, {key: value}, arg)
        given.add(key)
    return _settings(scope), given


# --- the table of rules: check(config, {key: rule}) ---

def check(config, rules):
    """Stop with one line at the first setting that breaks its rule: rule(value) is True for a good value, else the
    reason, shown as "--key=value: reason". A rule that raises (a string where a number belongs) refuses the value."""
    for key, rule in rules.items():
        value = config[key]
        try:
            verdict = rule(value)
        except Exception:
            verdict = "not a value this setting takes"
        if verdict is not True:
            shown = repr(value) if isinstance(value, str) and (not value or value != value.strip()) else value
            raise SystemExit(f"--{key}={shown}: {verdict}")


def at_least(low, why=""):
    """A finite int or float >= low (1e999 reads as inf: no setting means that); why: said after "must be >= low"."""
    return lambda v: ((type(v) is int or type(v) is float and math.isfinite(v)) and v >= low
                      or f"must be >= {low}{why}")


def ints_at_least(low, what, empty=False):
    """A tuple or list of ints >= low (empty only if allowed); what: the reason shown otherwise."""
    return lambda v: (isinstance(v, (tuple, list)) and (empty or len(v) > 0)
                      and all(type(x) is int and x >= low for x in v) or what)


def seed_ok(v):
    """A seed numpy and torch both take: an int from 0 to 2**63 - 1 (a DDP rank is added to it)."""
    return type(v) is int and 0 <= v < 2**63 or "a seed, an int from 0 to 2**63 - 1"


def pool_ok(v):
    """What a write slot starts from (model.GPTConfig.pool)."""
    return v in ("parts", "route") or ("parts (a slot starts from its part of the segment) or route (from the token "
                                       "pairs it wins by content)")


def seeds_ok(v):
    return (isinstance(v, (tuple, list)) and len(v) > 0 and all(seed_ok(s) is True for s in v)
            or "seeds, a tuple of at least one int from 0 to 2**63 - 1, like (1337, 1, 2)")


def device_ok(device):
    """cpu, or cuda / cuda:N / mps when this machine has it; else the one line that says so."""
    import torch
    if device == "cpu":
        return True
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            return "this machine has no CUDA GPU (torch.cuda.is_available() is False): use --device=cpu"
        index = device[5:]
        if index and not (index.isdigit() and int(index) < torch.cuda.device_count()):
            return f"this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0.."
        return True
    if device == "mps":
        return torch.backends.mps.is_available() or "MPS is not available here: use --device=cpu"
    return "choose cpu or cuda (cuda:N for another GPU)"


def dtype_ok(device):
    """The rule for dtype on device: float32, bfloat16 or float16, where the device supports it."""
    def rule(dtype):
        if dtype not in ("float32", "bfloat16", "float16"):
            return "choose float32, bfloat16 or float16"
        if dtype == "bfloat16" and str(device).startswith("cuda") and device_ok(device) is True \
                and not __import__("torch").cuda.is_bf16_supported():
            return "this GPU does not support bfloat16: use float16 or float32"
        return True
    return rule


def writable_dir(kind="directory"):
    """A directory to write into: absent (made later, under a writable existing parent) or a writable directory,
    never a file."""
    def rule(path):
        if not isinstance(path, str) or not path:
            return f"an empty path: name the {kind}"
        if os.path.exists(path) and not os.path.isdir(path):
            return f"{path} is a file, not a directory: choose another"
        parent = path
        while not os.path.exists(parent):
            parent = os.path.dirname(parent) or "."
        if not os.path.isdir(parent):
            return f"cannot make the {kind} {path}: {parent} is a file"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"cannot write into {parent} (permission denied, or a read-only place): choose another {kind}"
        return True
    return rule


def writable_file(path):
    """A file to write: its directory exists and is writable, and it is not a directory."""
    if os.path.isdir(path):
        return f"{path} is a directory, not a file"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"the directory {os.path.dirname(path)} does not exist"
    if not os.access(parent, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return f"cannot write {path} (permission denied)"
    return True
