"""The parts of TFLite's schema (``schema.fbs``) the frontend reads, as plain dataclasses.

``read_model(data)`` turns the bytes of a ``.tflite`` file into a ``TFLiteModel``: subgraphs of
tensors and operators, buffers as numpy views of the file, quantization and sparsity
parameters, and each operator's builtin options decoded into a ``dict`` by the field layouts of
``_OPTIONS`` (field positions are those of ``schema.fbs``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.errors import ConversionError
from ember.frontends.tflite.flatbuffer import Table
from ember.graph.types import Type

BUILTIN_OPS = """
ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE EMBEDDING_LOOKUP FLOOR
FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D LOCAL_RESPONSE_NORMALIZATION LOGISTIC
LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX
SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD
UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE
UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE
BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM ARG_MAX MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL
LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT
RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT
UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR
LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND COS WHERE RANK
ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE NON_MAX_SUPPRESSION_V4
NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL PLACEHOLDER_FOR_GREATER_OP_CODES
CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG REAL COMPLEX_ABS HASHTABLE HASHTABLE_FIND HASHTABLE_IMPORT
HASHTABLE_SIZE REDUCE_ALL CONV_3D_TRANSPOSE VAR_HANDLE READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS
RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU DYNAMIC_UPDATE_SLICE RELU_0_TO_1
UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2 UNSORTED_SEGMENT_MIN SIGN BITCAST
BITWISE_XOR RIGHT_SHIFT
""".split()

# TensorType -> ember element type (None: no tensor type in OpenVINO)
TENSOR_TYPES: dict[int, Type | None] = {
    0: Type.f32, 1: Type.f16, 2: Type.i32, 3: Type.u8, 4: Type.i64, 5: Type.string, 6: Type.boolean,
    7: Type.i16, 8: None, 9: Type.i8, 10: Type.f64, 11: None, 12: Type.u64, 13: None, 14: None,
    15: Type.u32, 16: Type.u16, 17: Type.i4, 18: Type.bf16,
}
TENSOR_TYPE_NAMES = ("FLOAT32 FLOAT16 INT32 UINT8 INT64 STRING BOOL INT16 COMPLEX64 INT8 FLOAT64 COMPLEX128 "
                     "UINT64 RESOURCE VARIANT UINT32 UINT16 INT4 BFLOAT16").split()

# BuiltinOptions union member -> its fields as "name:fmt:default" in schema order ("[i" is an
# int32 vector); only the options of ops the frontend converts are listed.
_OPTIONS: dict[int, str] = {
    1: "padding:b:0 stride_w:i:0 stride_h:i:0 activation:b:0 dilation_w:i:1 dilation_h:i:1",
    2: "padding:b:0 stride_w:i:0 stride_h:i:0 depth_multiplier:i:0 activation:b:0 dilation_w:i:1 dilation_h:i:1",
    5: "padding:b:0 stride_w:i:0 stride_h:i:0 filter_w:i:0 filter_h:i:0 activation:b:0",
    8: "activation:b:0 weights_format:b:0 keep_num_dims:?:0 asymmetric_quantize_inputs:?:0",
    9: "beta:f:0",
    10: "axis:i:0 activation:b:0",
    11: "activation:b:0",
    12: "activation:b:0",
    13: "radius:i:0 bias:f:0 alpha:f:0 beta:f:0",
    15: "_:b:0 _:b:0 align_corners:?:0 half_pixel_centers:?:0",
    17: "new_shape:[i:0",
    19: "block_size:i:0",
    21: "activation:b:0",
    23: "axis:i:0 batch_dims:i:0",
    27: "keep_dims:?:0",
    28: "activation:b:0",
    29: "activation:b:0",
    30: "squeeze_dims:[i:0",
    32: "begin_mask:i:0 end_mask:i:0 ellipsis_mask:i:0 new_axis_mask:i:0 shrink_axis_mask:i:0 offset:?:0",
    35: "num_splits:i:0",
    37: "in_type:b:0 out_type:b:0",
    40: "output_type:b:0",
    49: "padding:b:0 stride_w:i:0 stride_h:i:0 activation:b:0",
    57: "output_type:b:0",
    59: "values_count:i:0 axis:i:0",
    61: "axis:i:0",
    64: "num:i:0 axis:i:0",
    71: "activation:b:0 cell_clip:f:0 proj_clip:f:0 time_major:?:0 asymmetric_quantize_inputs:?:0",
    74: "align_corners:?:0 half_pixel_centers:?:0",
    75: "alpha:f:0",
    77: "mode:b:0",
    94: "block_size:i:0",
    101: "adj_x:?:0 adj_y:?:0 asymmetric_quantize_inputs:?:0",
    102: "exclusive:?:0 reverse:?:0",
    116: "approximate:?:0",
}


def _layout(spec: str) -> list[tuple[str, str, Any]]:
    out = []
    for item in spec.split():
        name, fmt, default = item.split(":")
        value: Any = float(default) if fmt == "f" else int(default)
        out.append((name, fmt, bool(value) if fmt == "?" else value))
    return out


_LAYOUTS = {k: _layout(v) for k, v in _OPTIONS.items()}


@dataclass
class Quantization:
    """Per-tensor (one scale) or per-axis (``axis``) affine quantization: ``real = scale * (q - zp)``."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0

    @property
    def per_axis(self) -> bool:
        return self.scale.size > 1


@dataclass
class Sparsity:
    traversal_order: list[int]
    block_map: list[int]
    dims: list[tuple[int, int, np.ndarray | None, np.ndarray | None]]  # (format, dense size, segments, indices)


@dataclass
class Tensor:
    index: int
    name: str
    type_code: int
    shape: list[int]
    shape_signature: list[int] | None
    buffer: int
    quant: Quantization | None
    sparsity: Sparsity | None
    is_variable: bool = False

    @property
    def element_type(self) -> Type:
        et = TENSOR_TYPES.get(self.type_code)
        if et is None:
            name = TENSOR_TYPE_NAMES[self.type_code] if self.type_code < len(TENSOR_TYPE_NAMES) else self.type_code
            raise ConversionError(f"ember: TFLite tensor '{self.name}' has type {name}, which OpenVINO "
                                  "models have no element type for")
        return et


@dataclass
class Operator:
    index: int
    op: str          # builtin name, or the custom code for CUSTOM ops
    custom: bool
    version: int
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any]
    custom_options: bytes


@dataclass
class Subgraph:
    name: str
    tensors: list[Tensor]
    inputs: list[int]
    outputs: list[int]
    operators: list[Operator]


@dataclass
class Signature:
    key: str
    subgraph: int
    inputs: dict[str, int]
    outputs: dict[str, int]


@dataclass
class TFLiteModel:
    version: int
    description: str
    subgraphs: list[Subgraph]
    buffers: list[np.ndarray]
    signatures: list[Signature] = field(default_factory=list)


def _options(op_table: Table, union_type: int) -> dict[str, Any]:
    layout = _LAYOUTS.get(union_type)
    if layout is None:
        return {}
    t = op_table.table(4)
    out: dict[str, Any] = {}
    for i, (name, fmt, default) in enumerate(layout):
        if name == "_":
            continue
        if t is None:
            out[name] = [] if fmt.startswith("[") else default
        elif fmt.startswith("["):
            out[name] = [int(v) for v in t.vector(i, "<i4")]
        else:
            out[name] = t.scalar(i, fmt, default)
    return out


def _quantization(t: Table | None) -> Quantization | None:
    if t is None:
        return None
    scale = np.array(t.vector(2, "<f4"), np.float32)
    if scale.size == 0:
        return None
    zp = np.array(t.vector(3, "<i8"), np.int64)
    if zp.size == 0:
        zp = np.zeros(scale.shape, np.int64)
    return Quantization(scale, zp, int(t.scalar(6, "i", 0)))


_INDEX_VECTORS = {1: "<i4", 2: "<u2", 3: "u1"}


def _sparsity(t: Table | None) -> Sparsity | None:
    if t is None:
        return None
    dims = []
    for d in t.tables(2):
        fmt, dense = int(d.scalar(0, "b", 0)), int(d.scalar(1, "i", 0))
        seg = idx = None
        if fmt == 1:
            seg_t, idx_t = d.table(3), d.table(5)
            seg_dt, idx_dt = _INDEX_VECTORS.get(d.scalar(2, "B", 0)), _INDEX_VECTORS.get(d.scalar(4, "B", 0))
            if seg_t is None or idx_t is None or seg_dt is None or idx_dt is None:
                raise ConversionError("ember: malformed TFLite sparsity parameters")
            seg = np.array(seg_t.vector(0, seg_dt), np.int64)
            idx = np.array(idx_t.vector(0, idx_dt), np.int64)
        dims.append((fmt, dense, seg, idx))
    return Sparsity([int(v) for v in t.vector(0, "<i4")], [int(v) for v in t.vector(1, "<i4")], dims)


def _tensor(i: int, t: Table) -> Tensor:
    sig = t.vector(7, "<i4")
    return Tensor(i, t.string(3), int(t.scalar(1, "b", 0)), [int(v) for v in t.vector(0, "<i4")],
                  [int(v) for v in sig] if sig.size else None, int(t.scalar(2, "I", 0)),
                  _quantization(t.table(4)), _sparsity(t.table(6)), bool(t.scalar(5, "?", False)))


def read_model(data: bytes | bytearray | memoryview) -> TFLiteModel:
    """Parse the bytes of a ``.tflite`` file (buffers stay views of ``data``)."""
    buf = memoryview(data).cast("B")
    if len(buf) >= 8 and bytes(buf[4:8]) != b"TFL3":
        raise ConversionError("ember: not a TFLite model (the file identifier is not 'TFL3')")
    root = Table.root(buf)
    codes = []
    for oc in root.tables(1):
        code = max(int(oc.scalar(0, "b", 0)), int(oc.scalar(3, "i", 0)))
        custom = oc.string(1)
        if code == 32:
            codes.append((custom or "CUSTOM", True, int(oc.scalar(2, "i", 1))))
        else:
            name = BUILTIN_OPS[code] if code < len(BUILTIN_OPS) else f"BUILTIN_{code}"
            codes.append((name, False, int(oc.scalar(2, "i", 1))))
    buffers = []
    for b in root.tables(4):
        offset, size = int(b.scalar(1, "Q", 0)), int(b.scalar(2, "Q", 0))
        if offset > 1:
            if offset + size > len(buf):
                raise ConversionError("ember: malformed TFLite file (a buffer lies past its end)")
            buffers.append(np.frombuffer(buf, np.uint8, size, offset))
        else:
            buffers.append(b.vector(0, "u1"))
    subgraphs = []
    for sg in root.tables(2):
        tensors = [_tensor(i, t) for i, t in enumerate(sg.tables(0))]
        ops = []
        for k, o in enumerate(sg.tables(3)):
            idx = int(o.scalar(0, "I", 0))
            if idx >= len(codes):
                raise ConversionError(f"ember: malformed TFLite file (operator {k} has opcode {idx})")
            name, custom, version = codes[idx]
            ops.append(Operator(k, name, custom, version, [int(v) for v in o.vector(1, "<i4")],
                                [int(v) for v in o.vector(2, "<i4")], _options(o, int(o.scalar(3, "B", 0))),
                                bytes(o.vector(5, "u1"))))
        subgraphs.append(Subgraph(sg.string(4), tensors, [int(v) for v in sg.vector(1, "<i4")],
                                  [int(v) for v in sg.vector(2, "<i4")], ops))
    signatures = []
    for s in root.tables(7):
        signatures.append(Signature(s.string(2), int(s.scalar(4, "I", 0)),
                                    {m.string(0): int(m.scalar(1, "I", 0)) for m in s.tables(0)},
                                    {m.string(0): int(m.scalar(1, "I", 0)) for m in s.tables(1)}))
    if not subgraphs:
        raise ConversionError("ember: the TFLite model has no subgraph")
    return TFLiteModel(int(root.scalar(0, "I", 0)), root.string(3), subgraphs, buffers, signatures)
