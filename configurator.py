"""
nanoGPT-style configuration: a script keeps its settings as module-level globals, then calls

    from configurator import configure
    config = configure(globals())

which applies, in order, config files given as plain arguments (python files that assign
settings, e.g. config/recall.py) and --key=value overrides, and returns the final settings as
a dict (for logging and checkpoints). An unknown key or a value of the wrong type stops the
script with one line that names the key. Config files are run as Python code (as in nanoGPT):
use only your own.
"""
import ast
import difflib
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


def configure(scope, argv=None):
    for arg in sys.argv[1:] if argv is None else argv:
        if not arg.startswith("--"):
            if "=" in arg and not os.path.isfile(arg):
                raise SystemExit(f"{arg}: write settings as --key=value")
            try:
                with open(arg) as f:
                    code = compile(f.read(), arg, "exec")  # named, so errors in it point to the file
            except OSError as e:
                raise SystemExit(f"cannot read config file {arg}: {e.strerror}") from None
            except SyntaxError as e:
                raise SystemExit(f"config file {arg}, line {e.lineno}: {e.msg}") from None
            assigned = {}
            exec(code, {}, assigned)  # a config file is Python, run as code: use only your own
            override(scope, assigned, arg)
            continue
        key, sep, text = arg[2:].partition("=")
        if not sep:
            raise SystemExit(f"{arg}: write settings as --key=value")
        try:
            value = ast.literal_eval(text)
        except (SyntaxError, ValueError):
            value = text  # a bare word is a string
        override(scope, {key: value}, arg)
    return _settings(scope)
