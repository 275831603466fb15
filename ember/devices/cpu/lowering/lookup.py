"""Lowering rule for LabelEncoder of numbers (``kernels/lookup.py``): the table is built here
once from the constant keys and values exactly as the reference kernel builds its dict (a later
duplicate key wins; -0.0 and 0.0 are one key; a NaN key matches NaN elements). String tables,
integer inputs with float keys, and float keys beyond 2**53 stay on the reference kernel."""

from __future__ import annotations

from typing import Any

import numpy as np

from ember.devices.cpu.lowering.driver import Lowering, const_of, lowers, static_shape
from ember.devices.cpu.runtime.plan import PLAIN, Op
from ember.graph.node import Node
from ember.ops.ml import label_table


def lookup_table(keys: np.ndarray, values: np.ndarray, floating: bool) -> tuple[np.ndarray, np.ndarray, Any] | None:
    """(sorted keys as f64 or i64, their values, the NaN key's value or None), or None."""
    table, nan_value = label_table(keys, values)
    ks = list(table)
    if keys.dtype.kind == "f" and not floating:
        return None  # an integer element equal to a float key: leave it to the reference
    if floating:
        k64 = np.asarray(ks, np.float64)
        if keys.dtype.kind in "iu" and np.any(np.abs(np.asarray(ks, np.int64)) > 2 ** 53):
            return None
    else:
        k64 = np.asarray(ks, np.int64)
    order = np.argsort(k64, kind="stable")
    vals = np.asarray([table[ks[i]] for i in order], values.dtype)
    return k64[order], vals, nan_value


@lowers("LabelEncoder")
def lower_label_encoder(lowering: Lowering, node: Node) -> bool:
    from ember.devices.cpu.kernels.lookup import INPUTS, lookup

    data_p = node.input_values()[0]
    consts = [const_of(p) for p in node.input_values()[1:]]
    xdt = data_p.element_type.dtype
    if any(c is None for c in consts) or xdt.name not in INPUTS:
        return False
    keys, values, default = (np.asarray(c) for c in consts)
    if keys.dtype.kind not in "iuf" or values.dtype.kind not in "iufb" or values.dtype.itemsize not in (1, 2, 4, 8) \
            or default.size < 1:
        return False
    floating = INPUTS[xdt.name] == "f"
    made = lookup_table(keys, values, floating)
    if made is None:
        return False
    k64, vals, nan_value = made
    item = np.dtype(f"u{values.dtype.itemsize}")
    shape = static_shape(data_p)
    out_dt = node.output(0).element_type.dtype
    tables = [k64 if k64.size else np.zeros(1, k64.dtype), vals.view(item) if vals.size else np.zeros(1, item),
              np.asarray(default.reshape(-1)[:1], values.dtype).view(item),
              np.asarray([nan_value if nan_value is not None else 0], values.dtype).view(item)]
    n_keys, has_nan = int(k64.size), nan_value is not None
    x = lowering.native_input(lowering.tensor(data_p), PLAIN)
    consts_t = [lowering.program.const(np.ascontiguousarray(t)) for t in tables]
    y = lowering.value(shape, PLAIN, out_dt, name=node.friendly_name)
    threads, isa = lowering.threads, lowering.isa

    def bind(ins: list[np.ndarray], outs: list[np.ndarray]) -> list[Any]:
        # an empty table still has one (padding) key in memory: the kernel reads keys[0] unguarded
        return [lookup(ins[0], outs[0].view(item), ins[1][:n_keys], ins[2], ins[3], ins[4], has_nan, threads, isa)]

    lowering.program.add(Op(node.friendly_name, "LabelEncoder", [x, *consts_t], [y], native=True, bind=bind))
    lowering.finish(node, y, [])
    return True
