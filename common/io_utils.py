"""Atomic file output: a reader sees the old file or the complete new one, never a part.

Local paths and URIs (`gs://...`, any scheme TensorFlow's file systems read) alike: a URI
is written through `tf.io.gfile` under a temporary name beside it, then renamed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from typing import Iterator, Union


def is_uri(path: str) -> bool:
    """Whether `path` is a URI such as gs://bucket/x (read and written through tf.io.gfile)."""
    return "://" in path


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path beside `path`; renames it to `path` if the block succeeds.

    On any error the temporary file is removed and `path` is left as it was.
    """
    out_dir = os.path.dirname(os.path.abspath(path))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}-", dir=out_dir)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _atomic_write_uri(path: str, data: Union[str, bytes]) -> str:
    import tensorflow as tf

    parent, name = path.rsplit("/", 1)
    tf.io.gfile.makedirs(parent)
    tmp = f"{parent}/.{name}-{uuid.uuid4().hex}"
    try:
        with tf.io.gfile.GFile(tmp, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)
        raise
    return path


def atomic_write(path: str, data: Union[str, bytes]) -> str:
    """Writes `data` to `path` (a local path or a URI, see is_uri) atomically; returns the path."""
    if is_uri(path):
        return _atomic_write_uri(path, data)
    with atomic_path(path) as tmp:
        with open(tmp, "wb" if isinstance(data, bytes) else "w", encoding=None if isinstance(data, bytes) else "utf-8") as f:
            f.write(data)
    return path
