"""Sparse TFLite constants (``SparsityParameters``) to dense arrays, as the DENSIFY op does.

The stored values follow a traversal of the dimensions (the tensor's own dimensions, then one
per blocked dimension) where each level is DENSE (every index) or SPARSE_CSR (segments and
indices, as in CSR). Walking the levels in order gives every stored value's coordinates.
"""

from __future__ import annotations

import numpy as np

from ember.errors import ConversionError
from ember.frontends.tflite.schema import Sparsity


def densify(values: np.ndarray, shape: list[int], sp: Sparsity) -> np.ndarray:
    """The dense ``shape`` array whose non-zero entries ``values`` stores sparsely by ``sp``."""
    n = len(shape)
    order = sp.traversal_order or list(range(n))
    if len(sp.dims) != len(order):
        raise ConversionError("ember: TFLite sparsity: dim_metadata and traversal_order differ in length")
    idx = np.zeros(1, np.int64)
    coords = np.zeros((1, len(order)), np.int64)
    for level, dim in enumerate(order):
        fmt, dense, seg, ind = sp.dims[level]
        if fmt == 0:
            i = np.arange(dense, dtype=np.int64)
            idx = (idx[:, None] * dense + i[None, :]).ravel()
            coords = np.repeat(coords, dense, axis=0)
            coords[:, dim] = np.tile(i, len(coords) // max(dense, 1))
        else:
            assert seg is not None and ind is not None
            if idx.size and idx.max() + 1 >= seg.size:
                raise ConversionError("ember: TFLite sparsity: a segment index is out of range")
            starts, ends = seg[idx], seg[idx + 1]
            counts = ends - starts
            k = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
            if k.size and k.max() >= ind.size:
                raise ConversionError("ember: TFLite sparsity: an index is out of range")
            coords = np.repeat(coords, counts, axis=0)
            coords[:, dim] = ind[k]
            idx = k
    if idx.size and idx.max() >= values.size:
        raise ConversionError("ember: TFLite sparsity: fewer stored values than the traversal reaches")
    full = coords[:, :n].copy()
    for b, d in enumerate(sp.block_map):
        size = sp.dims[order.index(n + b)][1]
        full[:, d] = full[:, d] * size + coords[:, n + b]
    out = np.zeros(shape, values.dtype)
    out[tuple(full.T)] = values[idx]
    return out
