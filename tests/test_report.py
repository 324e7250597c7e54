"""lab/report.py checks every setting before its hour of work (the work itself is the runs it reuses: not run here)."""
import os
import runpy
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo: scripts run by path


@pytest.mark.parametrize("arg, message", [
    ("--eval_samples=-5", "--eval_samples=-5: must be >= 1"),
    ("--procs=0", "--procs=0: must be >= 1"),
    ("--seeds=(1, -1)", "--seeds=(1, -1): seeds, a tuple of at least one int from 0 to 2**63 - 1, like (1337, 1, 2)"),
    ("--out_dir=afile", "--out_dir=afile: afile is a file, not a directory: choose another"),
    ("--out_dir=", "--out_dir='': an empty path: name the output directory"),
])
def test_bad_settings_stop_before_any_work(tmp_path, monkeypatch, arg, message):
    (tmp_path / "afile").write_text("x")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["report.py", arg])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(os.path.join(ROOT, "lab", "report.py"), run_name="__main__")
    assert str(e.value) == message
    assert os.listdir(tmp_path) == ["afile"]  # no run started, no set prepared
