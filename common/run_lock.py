"""One run per output directory: a lock file held by the running process.

The lock is `fcntl.flock` on `<dir>/.run.lock`. The kernel releases it when the process
holding it exits for any reason, kill -9 included, so a lock file left behind by a dead
run never blocks the next one; a live holder makes a second run stop at once. The
file names its holder (pid, host, start time, command) for the message. flock needs a
local file system: on NFS it may not exclude another machine.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
import sys
from typing import Iterator

LOCK_FILE = ".run.lock"


class RunLocked(RuntimeError):
    """Another live process holds the directory's lock."""

    def __init__(self, directory: str, holder: str):
        self.directory = directory
        self.holder = holder
        super().__init__(
            f"output directory {directory} is in use by another run ({holder or 'holder unknown'}); "
            "wait for it to finish or stop it, or give this run another output directory"
        )


def lock_path(directory: str) -> str:
    return os.path.join(directory, LOCK_FILE)


def read_holder(directory: str) -> str:
    """What the lock file says about its holder ('' when absent or empty)."""
    try:
        with open(lock_path(directory), encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


@contextlib.contextmanager
def hold(directory: str) -> Iterator[str]:
    """Holds the directory's run lock for the block; raises RunLocked at once if it is taken.

    Args:
      directory: the output directory (created when missing).
    Yields the lock file's path.
    """
    os.makedirs(directory, exist_ok=True)
    path = lock_path(directory)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLocked(directory, read_holder(directory)) from None
    try:
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        command = " ".join(sys.argv) or sys.executable
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}: {command}\n".encode(), 0)
        yield path
    finally:
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
