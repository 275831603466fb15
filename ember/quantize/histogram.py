"""NNCF's HISTOGRAM range estimator: a running histogram of every value a tensor takes over the
calibration set, then the [min, max] that minimizes the 8-bit quantization error of that
distribution (the L2-norm search of PyTorch's HistogramObserver, which NNCF ports)."""

from __future__ import annotations

import numpy as np


class Histogram:
    """2048 bins over the range seen so far; when a tensor widens the range, the old counts are
    spread over 16 sub-bins each and moved into the new bins."""

    def __init__(self, bins: int = 2048, levels: int = 256, upsample: int = 16) -> None:
        self.bins, self.levels, self.upsample = bins, levels, upsample
        self.counts: np.ndarray | None = None
        self.low = self.high = 0.0

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).reshape(-1)
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        if self.counts is None:
            self.low, self.high = lo, hi
            self.counts = np.histogram(x, self.bins, (lo, hi))[0].astype(np.float64)
            return
        new_lo, new_hi = min(self.low, lo), max(self.high, hi)
        update = np.histogram(x, self.bins, (new_lo, new_hi))[0].astype(np.float64)
        if (new_lo, new_hi) == (self.low, self.high):
            self.counts = self.counts + update
        elif self.low == self.high:
            self.counts = update + np.histogram([self.low], self.bins, (new_lo, new_hi))[0] * self.counts.sum()
        else:
            self.counts = update + self._moved(new_lo, new_hi)
        self.low, self.high = new_lo, new_hi

    def _moved(self, new_lo: float, new_hi: float) -> np.ndarray:
        assert self.counts is not None
        fine = np.repeat(self.counts, self.upsample) / self.upsample
        step = (self.high - self.low) / (self.bins * self.upsample)
        mids = np.linspace(self.low, self.high, self.bins * self.upsample + 1)[:-1] + 0.5 * step
        edges = np.linspace(new_lo, new_hi, self.bins + 1)
        idx = np.clip(np.searchsorted(edges, mids, side="right") - 1, 0, self.bins - 1)
        return np.bincount(idx, weights=fine, minlength=self.bins)

    def _error(self, start: int, end: int, width: float) -> float:
        """L2 error of quantizing the histogram's bins [start, end] to ``levels`` steps."""
        assert self.counts is not None
        dst = width * (end - start + 1) / self.levels
        if dst == 0.0:
            return 0.0
        src = np.arange(self.bins, dtype=np.float64)
        begin = (src - start) * width
        stop = begin + width
        first = np.clip(np.floor(begin / dst), 0, self.levels - 1)
        last = np.clip(np.floor(stop / dst), 0, self.levels - 1)
        density = self.counts / width

        def norm(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
            return density * (np.asarray(b) ** 3 - np.asarray(a) ** 3) / 3

        total = norm(begin - (first + 0.5) * dst, np.full(self.bins, dst / 2))
        total = total + (last - first - 1) * norm(-dst / 2, dst / 2)
        total = total + norm(-dst / 2, stop - (last * dst + dst / 2))
        return float(total.sum())

    def best_range(self) -> tuple[float, float]:
        """The [min, max] with the least quantization error, moving in from the side whose
        tail holds less of the distribution, until the error grows."""
        if self.counts is None:
            return 0.0, 0.0
        width = (self.high - self.low) / self.bins
        total = float(self.counts.sum())
        csum = np.cumsum(self.counts)
        step, alpha, beta = 1e-5, 0.0, 1.0
        start, end = 0, self.bins - 1
        best = float("inf")
        while alpha < beta:
            next_alpha, next_beta = alpha + step, beta - step
            left, right = start, end
            while left < end and csum[left] < next_alpha * total:
                left += 1
            while right > start and csum[right] > next_beta * total:
                right -= 1
            next_start, next_end = start, end
            if left - start > end - right:
                next_start, alpha = left, next_alpha
            else:
                next_end, beta = right, next_beta
            if next_start == start and next_end == end:
                continue
            err = self._error(next_start, next_end, width)
            if err > best:
                break
            best, start, end = err, next_start, next_end
        return self.low + width * start, self.low + width * (end + 1)
