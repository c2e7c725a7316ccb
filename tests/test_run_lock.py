"""Two runs on one output directory: the second stops at once; a dead run's lock does not block."""
import os
import signal
import subprocess
import sys

import pytest

from common import run_lock
from pipeline import local_runner

HOLDER = """
import sys, time
from common import run_lock
with run_lock.hold(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """A separate process holding the lock of tmp_path/out (killed with SIGKILL at the end)."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    yield out, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_a_second_run_stops_at_once_naming_the_holder(holder, capsys):
    out, proc = holder
    code = local_runner.main(["--output_dir", str(out), "--families", "none"])
    printed = capsys.readouterr().out
    assert code == 2
    assert f"output directory {out} is in use by another run (pid {proc.pid} on" in printed
    assert "another output directory" in printed
    # Nothing of the refused run was written: no log, no metadata.
    assert sorted(os.listdir(out)) == [run_lock.LOCK_FILE]


def test_the_lock_of_a_killed_run_does_not_block(holder):
    out, proc = holder
    with pytest.raises(run_lock.RunLocked):
        with run_lock.hold(str(out)):
            pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert f"pid {proc.pid}" in run_lock.read_holder(str(out))  # the dead holder's file is still there
    with run_lock.hold(str(out)):
        assert f"pid {os.getpid()}" in run_lock.read_holder(str(out))
    assert run_lock.read_holder(str(out)) == ""  # released and cleared


def test_one_process_cannot_hold_the_same_directory_twice(tmp_path):
    with run_lock.hold(str(tmp_path)):
        with pytest.raises(run_lock.RunLocked):
            with run_lock.hold(str(tmp_path)):
                pass
