"""``Dataset``: calibration data as NNCF takes it, an iterable and a transform function."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ember.quantize.parameters import QuantizationError


class Dataset:
    """Wraps ``data_source`` (any iterable: a list, a generator factory's result, a torch
    DataLoader) and ``transform_fn`` (item -> model inputs: one array, a list/tuple in input
    order, or a dict keyed by input name). Items are read lazily, once per pass, so a large
    source is never held in memory."""

    def __init__(self, data_source: Iterable[Any], transform_fn: Callable[[Any], Any] | None = None) -> None:
        self._data_source = data_source
        self._transform_fn = transform_fn

    def get_data(self, indices: list[int] | None = None) -> Iterable[Any]:
        """The raw items (only those at sorted ``indices`` when given)."""
        return self._data_source if indices is None else _pick(self._data_source, indices)

    def get_inference_data(self, indices: list[int] | None = None) -> Iterator[Any]:
        """The transformed items, ready to feed the model."""
        for item in self.get_data(indices):
            yield item if self._transform_fn is None else self._transform_fn(item)

    def get_length(self) -> int | None:
        """The number of items when the source knows it, else None."""
        return len(self._data_source) if hasattr(self._data_source, "__len__") else None  # type: ignore[arg-type]

    def get_batch_size(self) -> int | None:
        return getattr(self._data_source, "batch_size", None)


def _pick(source: Iterable[Any], indices: list[int]) -> Iterator[Any]:
    wanted = sorted(set(indices))
    pos = 0
    for i, item in enumerate(source):
        if pos >= len(wanted):
            return
        if i == wanted[pos]:
            pos += 1
            yield item


def as_dataset(data: Any) -> Dataset:
    """Accept a ``Dataset`` (ember's or NNCF's, duck-typed) or a plain iterable."""
    if hasattr(data, "get_inference_data"):
        return data
    if data is None:
        raise QuantizationError("ember: quantize needs a calibration_dataset (ember.nncf.Dataset(items, transform_fn))")
    return Dataset(data)


def samples(dataset: Dataset, limit: int | None) -> Iterator[Any]:
    """Up to ``limit`` transformed items; an empty dataset is an error."""
    it = itertools.islice(iter(dataset.get_inference_data()), limit)
    n = 0
    while True:
        try:
            item = next(it)
        except StopIteration:
            break
        except QuantizationError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's data source or transform_fn failed: say where
            raise QuantizationError(f"ember: reading calibration item {n} failed in the data source or "
                                    f"transform_fn: {type(e).__name__}: {e}") from e
        n += 1
        yield item
    if n == 0:
        raise QuantizationError("ember: the calibration dataset is empty: it yielded no items")
