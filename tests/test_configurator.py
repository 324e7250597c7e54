"""The table of constraints and config files: every bad setting stops with one line naming it."""
import os

import pytest

from configurator import (at_least, check, configure, device_ok, dtype_ok, ints_at_least, seed_ok, seeds_ok,
                          writable_dir, writable_file)


def one_line(e):
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


RULES = {"learning_rate": lambda v: v > 0 or "must be > 0", "lengths": ints_at_least(1, "must be >= 1"),
         "n": at_least(0), "name": lambda v: v > 0 or "a positive number"}


@pytest.mark.parametrize("bad, message", [
    (dict(learning_rate=-1.0), "--learning_rate=-1.0: must be > 0"),
    (dict(lengths=(0, 64)), "--lengths=(0, 64): must be >= 1"),
    (dict(lengths=("a",)), "--lengths=('a',): must be >= 1"),
    (dict(lengths=()), "--lengths=(): must be >= 1"),
    (dict(n=-5), "--n=-5: must be >= 0"),
    (dict(name="x"), "--name=x: not a value this setting takes"),  # a rule that raises refuses the value
])
def test_check_names_the_first_broken_setting(bad, message):
    """A rule is one function: True for a good value, else the reason."""
    config = {"learning_rate": 1e-3, "lengths": (1, 2), "n": 0, "name": 1, **bad}
    with pytest.raises(SystemExit) as e:
        check(config, RULES)
    assert one_line(e) == message
    check({"learning_rate": 1e-3, "lengths": (1, 2), "n": 0, "name": 1}, RULES)  # all good: nothing


def test_device_dtype_and_paths(tmp_path):
    import torch
    assert device_ok("cpu") is True and "choose cpu or cuda" in device_ok("tpu")
    if not torch.cuda.is_available():
        assert "this machine has no CUDA GPU" in device_ok("cuda")
    assert "choose float32, bfloat16 or float16" in dtype_ok("cpu")("float64")
    assert "choose float32" in dtype_ok("cpu")("float8") and dtype_ok("cpu")("bfloat16") is True
    (tmp_path / "file").write_text("x")
    assert "is a file" in writable_dir()(str(tmp_path / "file"))
    assert writable_dir()(str(tmp_path / "new" / "deeper")) is True
    assert "is a file" in writable_dir()(str(tmp_path / "file" / "sub"))
    assert "is a directory" in writable_file(str(tmp_path))
    assert "does not exist" in writable_file(str(tmp_path / "nodir" / "x.pt"))
    if os.getuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o500)
        assert "permission denied" in writable_dir()(str(tmp_path / "ro" / "out"))


def test_config_files_that_are_not_settings(tmp_path):
    scope = {"n_layer": 1}
    binary = tmp_path / "binary.py"
    binary.write_bytes(b"\x7fELF\x00\x01\xff\xfe")
    with pytest.raises(SystemExit) as e:
        configure(scope, [str(binary)])
    assert "is not Python text" in one_line(e)
    raising = tmp_path / "raising.py"
    raising.write_text("n_layer = 2\nn_head = undefined_name\n")
    with pytest.raises(SystemExit) as e:
        configure(scope, [str(raising)])
    assert one_line(e) == f"config file {raising}, line 2: NameError: name 'undefined_name' is not defined"


def test_given_settings_are_recorded(tmp_path):
    conf = tmp_path / "c.py"
    conf.write_text("n_layer = 1\n")
    scope = {"n_layer": 1, "mem_len": 0, "ltm": 0}
    config, given = configure(scope, [str(conf), "--mem_len=0"])
    assert given == {"n_layer", "mem_len"}  # given, even at their defaults (a resume must not drop them)
    assert config == scope == {"n_layer": 1, "mem_len": 0, "ltm": 0}  # nothing else written into the script


def test_quick_preset_comes_first_and_a_bare_flag_is_true():
    """--quick applies a script's smoke-test preset before the command line, which still overrides it;
    a bare --flag of a bool setting is --flag=True; without --quick the preset is not applied."""
    scope = dict(quick=False, out_dir="bench_out", n=8, verbose=False)
    quick = dict(out_dir="bench_out/quick", n=2)
    config, _ = configure(scope, ["--quick", "--n=3", "--verbose"], quick=quick)
    assert config == dict(quick=True, out_dir="bench_out/quick", n=3, verbose=True)
    scope = dict(quick=False, out_dir="bench_out", n=8, verbose=False)
    assert configure(scope, ["--n=3"], quick=quick)[0]["out_dir"] == "bench_out"
    with pytest.raises(SystemExit) as e:
        configure(dict(n=8), ["--n"])  # a bare flag of a setting that is not a bool
    assert one_line(e) == "--n: write settings as --key=value"
    with pytest.raises(SystemExit) as e:
        configure(dict(n=8), ["--nn"])  # a bare flag of no setting at all
    assert one_line(e) == "--nn: unknown setting 'nn' (did you mean --n?)"


def test_every_refusal_gives_its_reason(tmp_path):
    """An empty path, an infinite number (1e999) and a seed numpy or torch would refuse each stop with a reason;
    a config file that calls exit() stops too, not silently with nothing made."""
    with pytest.raises(SystemExit) as e:
        check({"out_dir": ""}, {"out_dir": writable_dir("output directory")})
    assert one_line(e) == "--out_dir='': an empty path: name the output directory"
    assert at_least(0)(float("inf")) == at_least(0)(float("nan")) == "must be >= 0" and at_least(0)(1e300) is True
    for bad in (-1, 2**64, 1.5, True):
        with pytest.raises(SystemExit, match="a seed, an int from 0 to 2\\*\\*63 - 1"):
            check({"seed": bad}, {"seed": seed_ok})
    check({"seed": 2**63 - 1, "seeds": (0, 1)}, {"seed": seed_ok, "seeds": seeds_ok})
    with pytest.raises(SystemExit, match="--seeds=\\(1, -1\\): seeds, a tuple"):
        check({"seeds": (1, -1)}, {"seeds": seeds_ok})
    for code in ("0", "None", "'bye'"):
        conf = tmp_path / "exits.py"
        conf.write_text(f"n_layer = 2\nraise SystemExit({code})\n")
        with pytest.raises(SystemExit) as e:
            configure({"n_layer": 1}, [str(conf)])
        assert one_line(e).startswith(f"config file {conf} calls exit(") and e.value.code != 0
