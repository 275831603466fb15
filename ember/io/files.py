"""Reading files that a model, or a cache, names: regular files only, with a size bound.

A path may be a FIFO (``open`` would block forever), a character device such as
``/dev/zero`` (``read`` never ends), or a symbolic link to either. ``open_regular`` opens
without blocking, checks with ``fstat`` on the open descriptor (no race between the check
and the read) that it is a regular file within a size bound, and the readers here never read
more than the size ``fstat`` reported.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ember.errors import EmberError

#: the largest file ember reads whole into memory by default (1 TiB: only a sanity bound)
MAX_FILE_BYTES = 1 << 40


def open_regular(path: str | os.PathLike[str], what: str, error: type[EmberError] = EmberError,
                 limit: int = MAX_FILE_BYTES, follow_symlinks: bool = True) -> tuple[io.FileIO, int]:
    """Open ``path`` for reading when it is a regular file of at most ``limit`` bytes; returns
    the open file and its size. ``what`` names the file in errors (``"weights file"``)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise error(f"ember: cannot read {what} '{path}': {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"ember: {what} '{path}' is not a regular file (a device, FIFO or folder); refused")
        if st.st_size > limit:
            raise error(f"ember: {what} '{path}' has {st.st_size} bytes, more than the limit of {limit}")
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        return io.FileIO(fd, "rb", closefd=True), st.st_size
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], what: str, error: type[EmberError] = EmberError,
                 limit: int = MAX_FILE_BYTES, follow_symlinks: bool = True) -> memoryview:
    """The bytes of a regular file (see ``open_regular``), read into private memory and
    returned as a read-only view (no second copy). A file that shrinks while it is read is
    an error, not a short read."""
    f, size = open_regular(path, what, error, limit, follow_symlinks)
    with f:
        view = memoryview(np.empty(size, np.uint8))  # not zero-filled: every byte is read into it
        got = 0
        while got < size:
            n = f.readinto(view[got:])
            if not n:
                raise error(f"ember: {what} '{path}' changed while it was read "
                            f"({got} of {size} bytes); try again")
            got += n
    return view.toreadonly()


def iter_chunks(path: str | os.PathLike[str], what: str, error: type[EmberError] = EmberError,
                limit: int = MAX_FILE_BYTES, chunk: int = 1 << 22) -> Iterator[bytes]:
    """The bytes of a regular file in chunks, never more than its size when opened."""
    f, size = open_regular(path, what, error, limit)
    with f:
        left = size
        while left > 0:
            data = f.read(min(chunk, left))
            if not data:
                return
            left -= len(data)
            yield data


def is_regular(path: Path) -> bool:
    """True when ``path`` (following links) is a regular file; never blocks."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
