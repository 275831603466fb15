"""A progress bar for long steps: tqdm when installed (``pip install ember[quantize]``), else a
log line at the start and the end. Never a hard dependency."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("ember.quantize")


def track(items: Iterable[Any], description: str, total: int | None = None, enabled: bool = True) -> Iterator[Any]:
    """Yield ``items`` while showing progress under ``description``."""
    if not enabled:
        yield from items
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        yield from tqdm(items, desc=description, total=total, leave=False)
        return
    start = time.perf_counter()
    log.info("ember: %s ...", description)
    n = 0
    for n, item in enumerate(items, 1):  # noqa: B007 - n is the count after the loop
        yield item
    log.info("ember: %s: %d done in %.1f s", description, n, time.perf_counter() - start)
