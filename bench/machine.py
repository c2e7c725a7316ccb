"""What a benchmark records about the machine it ran on, and the commit it ran at."""

import os
import platform
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def commit() -> str:
    """The repository's commit (`git rev-parse --short HEAD`), `+ changes` when the work tree
    differs from it; 'unknown' outside a git work tree."""
    try:
        head = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" + changes" if dirty else "")


def command_line(module: str, argv=None) -> str:
    """The command a results file records: `python -m MODULE` and the arguments (`argv`, or
    this process's), shell-quoted so that it runs as written (an empty value stays `''`)."""
    import shlex

    args = list(argv if argv is not None else sys.argv[1:])
    return " ".join(["python", "-m", module] + ([shlex.join(args)] if args else []))
