"""Progress bars for long work (converting and optimizing big models), shown only when asked.

The command-line tools turn them on (``with progress.shown():``) when standard error is a
terminal; the library never draws one by itself. Bars come from ``tqdm`` when it is installed
(``pip install "ember[demo]"``); without it, work runs as usual with no bar.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_SHOWN: contextvars.ContextVar[bool] = contextvars.ContextVar("ember_progress_shown", default=False)


@contextlib.contextmanager
def shown(on: bool = True) -> Iterator[None]:
    """Show progress bars for the work done inside the ``with`` block (in this context)."""
    token = _SHOWN.set(on)
    try:
        yield
    finally:
        _SHOWN.reset(token)


def bar(items: Iterable[T], total: int, desc: str, unit: str = "node", min_total: int = 500) -> Iterable[T]:
    """``items`` with a progress bar on standard error when bars are shown and ``total`` is at
    least ``min_total`` (small work finishes before a bar would help); else ``items`` itself."""
    if not _SHOWN.get() or total < min_total:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    kwargs: dict[str, Any] = {"total": total, "desc": desc, "unit": unit, "leave": False, "file": sys.stderr,
                              "dynamic_ncols": True}
    return tqdm(items, **kwargs)
