"""The shared helpers: the lock on a directory and the atomic write, against what a careless or hostile user or
a full disk does to them."""
import errno
import os
import re
import socket

import pytest
import torch

from common import lock_dir, unlock_dir, write_atomic


def one_line(e):
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def test_a_lock_that_is_garbage_is_taken_over_and_one_that_is_no_file_stops(tmp_path):
    """A LOCK holding no live process (-1, 0, text) is taken over (os.kill(-1, 0) would ask about every process);
    a LOCK that is a directory, and a place where no lock can be made, stop with one line."""
    d = tmp_path / "out"
    d.mkdir()
    for garbage in ("-1 " + socket.gethostname(), "0 " + socket.gethostname(), "pid host", ""):
        (d / "LOCK").write_text(garbage)
        path = lock_dir(str(d))
        assert (d / "LOCK").read_text().split()[0] == str(os.getpid())
        unlock_dir(path)
    (d / "LOCK").mkdir()
    with pytest.raises(SystemExit) as e:
        lock_dir(str(d))
    assert one_line(e) == f"{d}/LOCK is a directory, not a lock: remove it, or choose another directory"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit) as e:
        lock_dir(str(tmp_path / "afile" / "out"))
    assert one_line(e).startswith(f"cannot lock {tmp_path}/afile/out")


def test_a_full_disk_stops_the_write_with_one_line_and_keeps_the_old_file(tmp_path):
    """torch.save on a full disk raises a RuntimeError from the OSError: either way one line names the path and what
    the write needed, the old file stays and no temp file is left; other errors pass through."""
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"old")

    class Disk:  # a file on a disk that fills after 1,500 bytes
        def __init__(self, f):
            self.f = f

        def write(self, data):
            if self.f.tell() + len(data) > 1500:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def flush(self):
            self.f.flush()

    def fills_up(f):
        Disk(f).write(b"x" * 1200)
        Disk(f).write(b"x" * 1000)

    for write in (fills_up, lambda f: torch.save({"a": torch.zeros(10_000)}, Disk(f))):
        with pytest.raises(SystemExit) as e:
            write_atomic(str(path), write, binary=True)
        assert one_line(e).startswith(f"cannot write {path}: the disk is full (")
        assert re.search(r"bytes free, more than [0-9,]+ needed\): free space, or write elsewhere; .*ckpt.pt is as it "
                         r"was$", str(e.value))
        assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["ckpt.pt"]
    with pytest.raises(ZeroDivisionError):
        write_atomic(str(path), lambda f: 1 / 0)
