"""Network ATen ops: convolution, normalization, matrix products, pooling, softmax, attention,
resizing. High-level ops (linear, layer_norm, scaled_dot_product_attention, ...) are kept whole
by the export path and map onto ember's ops directly."""

from __future__ import annotations

from typing import Any

import numpy as np

import ember.opset as ops
from ember.frontends.pytorch.context import Call, const, convert, folded, i64, rank_of, static_dims
from ember.frontends.pytorch.registry import converter
from ember.graph.node import Output
from ember.graph.types import Type


def _per_dim(values: list[int], n: int) -> list[int]:
    return values * n if len(values) == 1 else values


def _channel_bias(b: Output, rank: int) -> Output:
    return ops.reshape(b, i64([1, -1] + [1] * (rank - 2)), False).output(0)


def _grouped(w: Output, groups: int, transposed: bool) -> Output:
    dims = static_dims(w)
    if dims is None:
        raise ValueError("grouped convolution weights must have a static shape")
    if transposed:  # [C_in, C_out/G, *K] -> [G, C_in/G, C_out/G, *K]
        return ops.reshape(w, i64([groups, dims[0] // groups] + dims[1:]), False).output(0)
    return ops.reshape(w, i64([groups, dims[0] // groups] + dims[1:]), False).output(0)


@converter("aten.convolution", "aten._convolution", "aten.conv1d", "aten.conv2d", "aten.conv3d",
           "aten.conv_transpose1d", "aten.conv_transpose2d", "aten.conv_transpose3d")
def convolution(call: Call) -> Output:
    x, w = call.tensor("input"), call.tensor("weight")
    n = rank_of(w) - 2
    unbatched = rank_of(x) == n + 1
    if unbatched:
        x = ops.unsqueeze(x, i64([0])).output(0)
    transposed = bool(call.get("transposed", False)) or call.op.startswith("aten.conv_transpose")
    stride = _per_dim(call.ints("stride", [1]), n)
    dilation = _per_dim(call.ints("dilation", [1]), n)
    groups = call.int("groups", 1)
    padding = folded(call.get("padding", 0))
    auto_pad = "explicit"
    if isinstance(padding, str):
        auto_pad = {"same": "same_upper", "valid": "valid"}[padding]
        pads = [0] * n
    else:
        pads = _per_dim(call.ints("padding", [0]), n)
    if transposed:
        out_pad = _per_dim(call.ints("output_padding", [0]), n)
        if groups == 1:
            y = ops.convolution_backprop_data(x, w, stride, None, pads, pads, dilation, auto_pad, out_pad).output(0)
        else:
            y = ops.group_convolution_backprop_data(x, _grouped(w, groups, True), stride, None, pads, pads, dilation,
                                                    auto_pad, out_pad).output(0)
    elif groups == 1:
        y = ops.convolution(x, w, stride, pads, pads, dilation, auto_pad).output(0)
    else:
        y = ops.group_convolution(x, _grouped(w, groups, False), stride, pads, pads, dilation, auto_pad).output(0)
    if call.has("bias"):
        y = ops.add(y, _channel_bias(call.tensor("bias"), n + 2)).output(0)
    if unbatched:
        y = ops.squeeze(y, i64([0])).output(0)
    return y


def _batch_norm(call: Call, x: Output) -> Output:
    c = x.partial_shape[1]
    et = x.element_type

    def param(name: str, fill: float) -> Output:
        if call.has(name):
            return convert(call.tensor(name), et)
        if not c.is_static:
            raise call.fail(f"batch norm without {name} needs a static channel count")
        return const(np.full(c.get_length(), fill), et)

    eps = float(call.get("eps", 1e-5))
    return ops.batch_norm_inference(x, param("weight", 1.0), param("bias", 0.0), param("running_mean", 0.0),
                                    param("running_var", 1.0), eps).output(0)


@converter("aten._native_batch_norm_legit_no_training", "aten.batch_norm", "aten.native_batch_norm",
           "aten._native_batch_norm_legit", "aten.instance_norm")
def batch_norm(call: Call) -> Any:
    x = call.tensor("input")
    training = call.get("training", False)
    if call.op == "aten.instance_norm" or (training and call.op != "aten._native_batch_norm_legit_no_training"):
        if call.op != "aten.instance_norm":
            raise call.fail("batch norm in training mode is not supported; call model.eval() first")
        y = ops.mvn(x, i64(list(range(2, rank_of(x)))), True, float(call.get("eps", 1e-5)), "inside_sqrt").output(0)
        if call.has("weight"):
            y = ops.multiply(y, _channel_bias(call.tensor("weight"), rank_of(x))).output(0)
        if call.has("bias"):
            y = ops.add(y, _channel_bias(call.tensor("bias"), rank_of(x))).output(0)
        return y
    y = _batch_norm(call, x)
    if call.op == "aten.batch_norm":
        return y
    return (y, None, None)


def _layer_norm(call: Call, x: Output, n: int) -> Output:
    r = rank_of(x)
    y = ops.mvn(x, i64(list(range(r - n, r))), True, float(call.get("eps", 1e-5)), "inside_sqrt").output(0)
    if call.has("weight"):
        y = ops.multiply(y, convert(call.tensor("weight"), x.element_type)).output(0)
    if call.has("bias"):
        y = ops.add(y, convert(call.tensor("bias"), x.element_type)).output(0)
    return y


@converter("aten.layer_norm", "aten.native_layer_norm")
def layer_norm(call: Call) -> Any:
    x = call.tensor("input")
    y = _layer_norm(call, x, len(call.ints("normalized_shape")))
    return y if call.op == "aten.layer_norm" else (y, None, None)


@converter("aten.group_norm", "aten.native_group_norm")
def group_norm(call: Call) -> Any:
    x = call.tensor("input")
    g = call.int("num_groups" if "num_groups" in call.args else "group")
    r = rank_of(x)
    grouped = ops.reshape(x, i64([0, g, -1]), True).output(0)
    eps = float(call.get("eps", 1e-5))
    y = ops.mvn(grouped, i64([2]), True, eps, "inside_sqrt").output(0)
    y = ops.reshape(y, ops.shape_of(x), False).output(0)
    if call.has("weight"):
        y = ops.multiply(y, _channel_bias(call.tensor("weight"), r)).output(0)
    if call.has("bias"):
        y = ops.add(y, _channel_bias(call.tensor("bias"), r)).output(0)
    return y if call.op == "aten.group_norm" else (y, None, None)


@converter("aten.linear")
def linear(call: Call) -> Output:
    x, w = call.tensor("input"), call.tensor("weight")
    y = ops.matmul(x, convert(w, x.element_type), False, True).output(0)
    if call.has("bias"):
        y = ops.add(y, convert(call.tensor("bias"), x.element_type)).output(0)
    return y


@converter("aten.addmm")
def addmm(call: Call) -> Output:
    y = ops.matmul(call.tensor("mat1"), call.tensor("mat2"), False, False).output(0)
    alpha, beta = call.get("alpha", 1), call.get("beta", 1)
    if alpha != 1:
        y = ops.multiply(y, const(alpha, y.element_type)).output(0)
    bias = call.tensor("self")
    if beta != 1:
        bias = ops.multiply(bias, const(beta, y.element_type)).output(0)
    return ops.add(y, bias).output(0) if beta != 0 else y


@converter("aten.mm", "aten.bmm", "aten.matmul")
def matmul(call: Call) -> Output:
    a, b = call.tensor("self"), call.tensor("mat2" if "mat2" in call.args else "other")
    return ops.matmul(a, b, False, False).output(0)


@converter("aten.baddbmm")
def baddbmm(call: Call) -> Output:
    y = ops.matmul(call.tensor("batch1"), call.tensor("batch2"), False, False).output(0)
    alpha, beta = call.get("alpha", 1), call.get("beta", 1)
    if alpha != 1:
        y = ops.multiply(y, const(alpha, y.element_type)).output(0)
    if beta == 0:
        return y
    bias = call.tensor("self")
    if beta != 1:
        bias = ops.multiply(bias, const(beta, y.element_type)).output(0)
    return ops.add(y, bias).output(0)


def _pool_args(call: Call, n: int) -> tuple[list[int], list[int], list[int], list[int]]:
    kernel = _per_dim(call.ints("kernel_size"), n)
    stride = call.ints("stride", [])
    stride = _per_dim(stride, n) if stride else kernel
    pads = _per_dim(call.ints("padding", [0]), n)
    dilation = _per_dim(call.ints("dilation", [1]), n)
    return kernel, stride, pads, dilation


def _pool_input(call: Call, n: int) -> tuple[Output, bool]:
    x = call.tensor("self")
    if rank_of(x) == n + 1:
        return ops.unsqueeze(x, i64([0])).output(0), True
    return x, False


@converter("aten.max_pool1d", "aten.max_pool2d", "aten.max_pool3d", "aten.max_pool2d_with_indices",
           "aten.max_pool1d_with_indices", "aten.max_pool3d_with_indices")
def max_pool(call: Call) -> Any:
    n = int(call.op.split("max_pool")[1][0])
    x, unbatched = _pool_input(call, n)
    kernel, stride, pads, dilation = _pool_args(call, n)
    rounding = "ceil_torch" if call.get("ceil_mode", False) else "floor"
    node = ops.max_pool(x, stride, dilation, pads, pads, kernel, rounding, "explicit", "i64", 2)
    y, idx = node.output(0), node.output(1)
    if unbatched:
        y = ops.squeeze(y, i64([0])).output(0)
        idx = ops.squeeze(idx, i64([0])).output(0)
    return (y, idx) if call.op.endswith("with_indices") else y


@converter("aten.avg_pool1d", "aten.avg_pool2d", "aten.avg_pool3d")
def avg_pool(call: Call) -> Output:
    n = int(call.op.split("avg_pool")[1][0])
    x, unbatched = _pool_input(call, n)
    kernel, stride, pads, _ = _pool_args(call, n)
    if call.has("divisor_override"):
        raise call.fail("divisor_override is not supported")
    exclude = not call.get("count_include_pad", True)
    rounding = "ceil_torch" if call.get("ceil_mode", False) else "floor"
    y = ops.avg_pool(x, stride, pads, pads, kernel, exclude, rounding, "explicit").output(0)
    return ops.squeeze(y, i64([0])).output(0) if unbatched else y


@converter("aten.adaptive_avg_pool1d", "aten.adaptive_avg_pool2d", "aten._adaptive_avg_pool2d",
           "aten.adaptive_avg_pool3d", "aten._adaptive_avg_pool3d", "aten.adaptive_max_pool2d")
def adaptive_pool(call: Call) -> Any:
    x = call.tensor("self")
    size = call.ints("output_size")
    n = len(size)
    dims = x.partial_shape
    spatial = [dims[rank_of(x) - n + i] for i in range(n)]
    size = [s if s is not None and s >= 0 else spatial[i].get_length() for i, s in enumerate(size)]
    if "max" in call.op:
        node = ops.adaptive_max_pool(x, i64(size), "i64")
        return (node.output(0), node.output(1))
    if all(s == 1 for s in size):
        r = rank_of(x)
        return ops.reduce_mean(x, i64(list(range(r - n, r))), True).output(0)
    return ops.adaptive_avg_pool(x, i64(size)).output(0)


@converter("aten._softmax", "aten.softmax", "aten._log_softmax", "aten.log_softmax", "aten.special_softmax")
def softmax(call: Call) -> Output:
    x = call.tensor("self")
    et = call.out_type or call.dtype("dtype")
    if et is not None:
        x = convert(x, et)
    elif not x.element_type.is_real:
        x = convert(x, Type.f32)
    axis = call.int("dim") % rank_of(x)
    fn = ops.log_softmax if "log_softmax" in call.op else ops.softmax
    return fn(x, axis).output(0)


@converter("aten.scaled_dot_product_attention")
def sdpa(call: Call) -> Output:
    q, k, v = call.tensor("query"), call.tensor("key"), call.tensor("value")
    et = q.element_type
    if call.get("enable_gqa", False):
        hq, hk = q.partial_shape[-3], k.partial_shape[-3]
        if not (hq.is_static and hk.is_static):
            raise call.fail("grouped-query attention needs static head counts")
        rep = hq.get_length() // hk.get_length()
        if rep > 1:
            k = _repeat_heads(k, rep)
            v = _repeat_heads(v, rep)
    mask = call.args.get("attn_mask")
    scale = call.args.get("scale")
    causal = bool(call.get("is_causal", False))
    args: list[Any] = [q, k, v]
    if mask is not None:
        mask = mask if isinstance(mask, Output) else const(mask, et)
        if mask.element_type is Type.boolean:
            # as the additive mask the boolean one means (True attends), which the CPU kernel takes
            mask = ops.select(mask, const(0.0, et), const(-np.inf, et)).output(0)
        args.append(convert(mask, et))
    elif scale is not None or causal:
        args.append(const(0.0, et))
    if scale is not None:
        args.append(const(float(scale), et))
    return ops.scaled_dot_product_attention(*args, causal=causal).output(0)


def _repeat_heads(x: Output, rep: int) -> Output:
    r = rank_of(x)
    y = ops.unsqueeze(x, i64([r - 2])).output(0)
    reps = [1] * (r + 1)
    reps[r - 2] = rep
    y = ops.tile(y, i64(reps)).output(0)
    dims = [0] * (r - 3) + [-1] + [0, 0]
    return ops.reshape(y, i64(dims), True).output(0)


def _resize(call: Call, mode: str) -> Output:
    x = call.tensor("input" if "input" in call.args else "self")
    r = rank_of(x)
    n = r - 2
    axes = i64(list(range(2, r)))
    size = call.args.get("output_size")
    align = bool(call.get("align_corners", False))
    if mode == "nearest":
        ctm, nearest = "asymmetric", "floor"
    else:
        ctm, nearest = ("align_corners" if align else "pytorch_half_pixel"), "round_prefer_floor"
    if size is not None and folded(size) is not None and (not isinstance(size, list) or size):
        sizes = call.sizes("output_size")
        target = sizes if isinstance(sizes, Output) else i64(sizes)
        return ops.interpolate(x, target, mode, "sizes", [0] * r, [0] * r, ctm, nearest, axes=axes).output(0)
    scales = call.args.get("scale_factors")
    if scales is None:
        scales = [call.args.get(k) for k in ("scales_d", "scales_h", "scales_w") if k in call.args]
    scales = [float(s) for s in (scales if isinstance(scales, (list, tuple)) else [scales])]
    scales = scales * n if len(scales) == 1 else scales
    return ops.interpolate(x, const(scales, Type.f32), mode, "scales", [0] * r, [0] * r, ctm, nearest,
                           axes=axes).output(0)


@converter("aten.upsample_nearest1d", "aten.upsample_nearest2d", "aten.upsample_nearest3d")
def upsample_nearest(call: Call) -> Output:
    return _resize(call, "nearest")


@converter("aten.upsample_bilinear2d", "aten.upsample_linear1d", "aten.upsample_trilinear3d")
def upsample_linear(call: Call) -> Output:
    return _resize(call, "linear")


@converter("aten.upsample_bicubic2d")
def upsample_cubic(call: Call) -> Output:
    return _resize(call, "cubic")


@converter("aten.pixel_shuffle")
def pixel_shuffle(call: Call) -> Output:
    x = call.tensor("self")
    f = call.int("upscale_factor")
    return ops.depth_to_space(x, "depth_first", f).output(0)


def _gates_fico(w: Output, hidden: int) -> Output:
    """torch's gate order (input, forget, cell, output) as OpenVINO's (forget, input, cell, output)."""
    h = hidden
    order = np.concatenate([np.arange(h, 2 * h), np.arange(0, h), np.arange(2 * h, 4 * h)])
    return ops.gather(w, i64(order), i64(0)).output(0)


@converter("aten.lstm_cell")
def lstm_cell(call: Call) -> tuple[Output, Output]:
    x = call.tensor("input")
    h, c = call["hx"]
    w_ih, w_hh = call.tensor("w_ih"), call.tensor("w_hh")
    hidden = w_hh.partial_shape[1].get_length()
    if call.has("b_ih"):
        b = call.tensor("b_ih")
        if call.has("b_hh"):
            b = ops.add(b, call.tensor("b_hh")).output(0)
    else:
        b = const(np.zeros(4 * hidden), x.element_type)
    node = ops.lstm_cell(x, h, c, _gates_fico(w_ih, hidden), _gates_fico(w_hh, hidden), _gates_fico(b, hidden),
                         hidden)
    return node.output(0), node.output(1)


@converter("aten.grid_sampler_2d", "aten.grid_sampler")
def grid_sampler(call: Call) -> Output:
    mode = {0: "bilinear", 1: "nearest", 2: "bicubic"}[call.int("interpolation_mode", 0)]
    padding = {0: "zeros", 1: "border", 2: "reflection"}[call.int("padding_mode", 0)]
    x = call.tensor("input")
    grid = convert(call.tensor("grid"), x.element_type)
    attrs = {"align_corners": bool(call.get("align_corners", False)), "mode": mode, "padding_mode": padding}
    return ops.grid_sample(x, grid, attrs).output(0)
