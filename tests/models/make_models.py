#!/usr/bin/python3
"""Generates the small ONNX models the CNN unit tests use, with inputs and expected outputs.

Run with Debian's python (python3-torch, python3-onnx, python3-numpy):
    /usr/bin/python3 tests/models/make_models.py [OUTDIR [quantized]]
("quantized" writes only the models of the quantized operators, qlinear_*, qdq_* and qbad_*,
whose references are numpy computations of onnxruntime's integer arithmetic.)
For each model NAME it writes NAME.onnx, NAME.in.npy (float32 input) and NAME.out.npy (expected
output of the graph's first output, computed by PyTorch from the same weights). Models come in
two kinds: single-operator graphs built with onnx.helper (every operator and attribute variant
the engine supports, expected values from torch.nn.functional), and tiny networks with the
structure of ResNet / MobileNetV2 / MobileNetV3 / EfficientNet exported by torch.onnx.export.
Everything is seeded; re-running produces the same numbers (up to PyTorch version rounding).
Each file stays far below 1 MB.
"""
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(1234)
torch.manual_seed(1234)


def rnd(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def save(name, model, x, y):
    # (no onnx.checker: output shapes are left unspecified on purpose)
    onnx.save(model, os.path.join(OUT, name + ".onnx"))
    np.save(os.path.join(OUT, name + ".in.npy"), np.ascontiguousarray(x, dtype=np.float32))
    np.save(os.path.join(OUT, name + ".out.npy"), np.ascontiguousarray(y, dtype=np.float32))
    print(f"{name}: in {tuple(x.shape)} out {tuple(y.shape)}")


def graph(name, nodes, inits, in_shape, out_name, out_shape, opset=13, extra_inputs=()):
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)
    out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)
    g = helper.make_graph(nodes, name, [inp, *extra_inputs], [out],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                             producer_name="shoplens-tests")


T = lambda a: torch.from_numpy(np.asarray(a))


# ---- single-operator graphs -----------------------------------------------------------------

def conv_variants():
    # grouped conv, stride 2, asymmetric pads, dilation 2, bias, then Relu
    x = rnd(2, 4, 11, 10)
    w = rnd(6, 2, 3, 3, scale=0.3)
    b = rnd(6)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv_g2", group=2,
                              strides=[2, 2], pads=[1, 0, 2, 1], dilations=[2, 2],
                              kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    y = F.relu(F.conv2d(F.pad(T(x), (0, 1, 1, 2)), T(w), T(b), stride=2, dilation=2, groups=2))
    save("conv_group", graph("conv_group", nodes, {"w": w, "b": b}, ["N", 4, 11, 10], "y", None),
         x, y.numpy())

    # depthwise 3x3 + Clip(0, 6) with bounds as inputs (opset 13)
    x = rnd(2, 8, 9, 9)
    w = rnd(8, 1, 3, 3, scale=0.5)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="dw", group=8, pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["y"], name="relu6")]
    y = torch.clamp(F.conv2d(T(x), T(w), padding=1, groups=8), 0, 6)
    save("conv_dw", graph("conv_dw", nodes, {"w": w, "lo": np.array(0, np.float32),
                                             "hi": np.array(6, np.float32)},
                          ["N", 8, 9, 9], "y", None), x, y.numpy())

    # auto_pad SAME_UPPER / SAME_LOWER / VALID, stride 2 on an even input; concatenated
    x = rnd(1, 3, 8, 8)
    w = rnd(4, 3, 3, 3, scale=0.3)
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="su", auto_pad="SAME_UPPER", strides=[2, 2]),
             helper.make_node("Conv", ["x", "w"], ["b"], name="sl", auto_pad="SAME_LOWER", strides=[2, 2]),
             helper.make_node("Conv", ["x", "w"], ["c"], name="va", auto_pad="VALID", strides=[2, 2]),
             helper.make_node("Flatten", ["a"], ["fa"], name="fa"),
             helper.make_node("Flatten", ["b"], ["fb"], name="fb"),
             helper.make_node("Flatten", ["c"], ["fc"], name="fc"),
             helper.make_node("Concat", ["fa", "fb", "fc"], ["y"], name="cat", axis=1)]
    a = F.conv2d(F.pad(T(x), (0, 1, 0, 1)), T(w), stride=2)
    b2 = F.conv2d(F.pad(T(x), (1, 0, 1, 0)), T(w), stride=2)
    c = F.conv2d(T(x), T(w), stride=2)
    y = torch.cat([a.flatten(1), b2.flatten(1), c.flatten(1)], 1)
    save("conv_autopad", graph("conv_autopad", nodes, {"w": w}, [1, 3, 8, 8], "y", None), x, y.numpy())

    # 1x1 conv + BatchNormalization (folded at load) + HardSwish
    x = rnd(2, 5, 6, 7)
    w = rnd(7, 5, 1, 1, scale=0.4)
    g, be, mu, var = rnd(7), rnd(7), rnd(7), (rng.random(7) + 0.5).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="pw"),
             helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["n"], name="bn", epsilon=1e-3),
             helper.make_node("HardSwish", ["n"], ["y"], name="hs")]
    y = F.hardswish(F.batch_norm(F.conv2d(T(x), T(w)), T(mu), T(var), T(g), T(be), False, 0.0, 1e-3))
    save("conv_bn_hswish", graph("conv_bn_hswish", nodes, {"w": w, "g": g, "be": be, "mu": mu, "var": var},
                                 ["N", 5, 6, 7], "y", None), x, y.numpy())


def conv3x3_residual():
    # dense 3x3 stride-1 convolutions with odd output sizes, with and without padding, bias + Relu,
    # and a residual Add whose operand is also the input of the fused convolution (in-place trap)
    x = rnd(2, 16, 19, 17)
    w1, b1 = rnd(24, 16, 3, 3, scale=0.2), rnd(24)
    w2 = rnd(24, 24, 3, 3, scale=0.2)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="w_pad", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["c"], name="w_same", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "r"], ["s"], name="res"),
             helper.make_node("Conv", ["s", "w2"], ["y"], name="w_valid")]
    t = F.relu(F.conv2d(T(x), T(w1), T(b1), padding=1))
    y = F.conv2d(F.conv2d(t, T(w2), padding=1) + t, T(w2))
    save("conv3x3_residual", graph("conv3x3_residual", nodes, {"w1": w1, "b1": b1, "w2": w2}, ["N", 16, 19, 17], "y", None),
         x, y.numpy())


def bn_acts():
    x = rnd(2, 3, 5, 5)
    g, be, mu, var = rnd(3), rnd(3), rnd(3), (rng.random(3) + 0.5).astype(np.float32)
    nodes = [helper.make_node("BatchNormalization", ["x", "g", "be", "mu", "var"], ["n"], name="bn"),
             helper.make_node("Sigmoid", ["n"], ["s"], name="sig"),
             helper.make_node("HardSigmoid", ["n"], ["h"], name="hsig", alpha=0.3, beta=0.4),
             helper.make_node("Add", ["s", "h"], ["y"], name="add")]
    n = F.batch_norm(T(x), T(mu), T(var), T(g), T(be), False, 0.0, 1e-5)
    y = torch.sigmoid(n) + torch.clamp(0.3 * n + 0.4, 0, 1)
    save("bn_acts", graph("bn_acts", nodes, {"g": g, "be": be, "mu": mu, "var": var}, ["N", 3, 5, 5], "y", None),
         x, y.numpy())


def pools():
    x = rnd(2, 3, 9, 10)
    nodes = [helper.make_node("MaxPool", ["x"], ["a"], name="mp_ceil", kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1], ceil_mode=1),
             helper.make_node("MaxPool", ["x"], ["b"], name="mp_dil", kernel_shape=[2, 2], dilations=[2, 2]),
             helper.make_node("AveragePool", ["x"], ["c"], name="ap_excl", kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("AveragePool", ["x"], ["d"], name="ap_incl", kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1], count_include_pad=1),
             helper.make_node("AveragePool", ["x"], ["e"], name="ap_ceil", kernel_shape=[2, 2], strides=[2, 2],
                              ceil_mode=1),
             helper.make_node("GlobalAveragePool", ["x"], ["f"], name="gap")]
    for k in "abcdef":
        nodes.append(helper.make_node("Flatten", [k], ["f" + k], name="flat_" + k))
    nodes.append(helper.make_node("Concat", ["f" + k for k in "abcdef"], ["y"], name="cat", axis=1))
    t = T(x)
    parts = [F.max_pool2d(t, 3, 2, 1, ceil_mode=True), F.max_pool2d(t, 2, 1, 0, dilation=2),
             F.avg_pool2d(t, 3, 2, 1, count_include_pad=False), F.avg_pool2d(t, 3, 2, 1, count_include_pad=True),
             F.avg_pool2d(t, 2, 2, 0, ceil_mode=True), F.adaptive_avg_pool2d(t, 1)]
    y = torch.cat([p.flatten(1) for p in parts], 1)
    save("pools", graph("pools", nodes, {}, ["N", 3, 9, 10], "y", None), x, y.numpy())


def shape_arith():
    # Conv -> GAP -> Reshape to [batch, -1] where the shape comes from Shape/Gather/Unsqueeze/Concat
    x = rnd(2, 3, 6, 6)
    w = rnd(4, 3, 3, 3, scale=0.3)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("GlobalAveragePool", ["c"], ["p"], name="gap"),
             helper.make_node("Shape", ["p"], ["s"], name="shape"),
             helper.make_node("Constant", [], ["zero"], name="k0", value=numpy_helper.from_array(np.array(0, np.int64))),
             helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
             helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"], name="unsq"),
             helper.make_node("Concat", ["n1", "minus1"], ["shp"], name="cat", axis=0),
             helper.make_node("Reshape", ["p", "shp"], ["r"], name="reshape"),
             helper.make_node("Unsqueeze", ["r", "ax1"], ["u"], name="unsq2"),
             helper.make_node("Squeeze", ["u", "ax1"], ["q"], name="sq"),
             helper.make_node("Identity", ["q"], ["i"], name="id"),
             helper.make_node("Dropout", ["i"], ["y"], name="drop")]
    inits = {"w": w, "ax0": np.array([0], np.int64), "ax1": np.array([1], np.int64),
             "minus1": np.array([-1], np.int64)}
    y = F.conv2d(T(x), T(w)).mean((2, 3))
    save("shape_arith", graph("shape_arith", nodes, inits, ["N", 3, 6, 6], "y", None), x, y.numpy())


def math_ops():
    x = rnd(2, 4, 3, 5)
    c1 = rnd(1, 4, 1, 1)
    c2 = rnd(5)
    wm = rnd(4, 6, scale=0.5)
    gw = rnd(3, 6, scale=0.5)   # used with transB
    gc = rnd(3)
    nodes = [helper.make_node("Add", ["x", "c1"], ["a"], name="add_b"),
             helper.make_node("Mul", ["a", "c2"], ["m"], name="mul_b"),
             helper.make_node("Sub", ["m", "x"], ["s"], name="sub"),
             helper.make_node("Div", ["s", "d"], ["dv"], name="div"),
             helper.make_node("ReduceMean", ["dv"], ["r1"], name="rm_hw", axes=[2, 3], keepdims=1),
             helper.make_node("ReduceMean", ["dv"], ["r0"], name="rm_w", axes=[3], keepdims=0),
             helper.make_node("Transpose", ["r0"], ["t"], name="tr", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["t", "wm"], ["mm"], name="matmul"),
             helper.make_node("Softmax", ["mm"], ["sm"], name="softmax", axis=-1),
             helper.make_node("Flatten", ["r1"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "gwt"], ["ge"], name="gemm_ta", alpha=0.5, beta=2.0, transA=0, transB=0),
             helper.make_node("Gemm", ["ge", "gw"], ["g2"], name="gemm_tb", transB=1, beta=1.0),
             helper.make_node("Add", ["g2", "gc"], ["g3"], name="add_c"),
             helper.make_node("Flatten", ["sm"], ["fs"], name="flat2"),
             helper.make_node("Concat", ["g3", "fs"], ["y"], name="cat", axis=1)]
    gwt = rnd(4, 6, scale=0.5)
    inits = {"c1": c1, "c2": c2, "d": np.array([2.0], np.float32), "wm": wm, "gw": gw, "gc": gc, "gwt": gwt}
    t = T(x)
    dv = ((t + T(c1)) * T(c2) - t) / 2.0
    r1 = dv.mean((2, 3), keepdim=True)
    r0 = dv.mean(3)
    sm = torch.softmax(r0.permute(0, 2, 1) @ T(wm), -1)
    ge = 0.5 * (r1.flatten(1) @ T(gwt))
    g3 = ge @ T(gw).t() + T(gc)
    y = torch.cat([g3, sm.flatten(1)], 1)
    save("math_ops", graph("math_ops", nodes, inits, ["N", 4, 3, 5], "y", None), x, y.numpy())


def opset11():
    # Squeeze/Unsqueeze with axes attributes, Clip with inputs, Softmax with coerced 2-D semantics
    x = rnd(2, 3, 4, 1)
    nodes = [helper.make_node("Squeeze", ["x"], ["s"], name="sq", axes=[3]),
             helper.make_node("Clip", ["s", "lo", "hi"], ["c"], name="clip"),
             helper.make_node("Softmax", ["c"], ["sm"], name="sm", axis=1),
             helper.make_node("Unsqueeze", ["sm"], ["y"], name="unsq", axes=[1])]
    inits = {"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)}
    c = torch.clamp(T(x)[..., 0], -0.5, 0.7)
    y = torch.softmax(c.reshape(2, -1), 1).reshape(2, 3, 4).unsqueeze(1)
    save("opset11", graph("opset11", nodes, inits, ["N", 3, 4, 1], "y", None, opset=11), x, y.numpy())


def typed_fields():
    # float16 weights (raw_data), bias in float_data, int64 shape in int64_data, double scale
    x = rnd(1, 2, 5, 5)
    w = rnd(3, 2, 3, 3, scale=0.5).astype(np.float16)
    b = rnd(3)
    wt = numpy_helper.from_array(w, "w")
    bt = helper.make_tensor("b", TensorProto.FLOAT, [3], b.tolist())          # float_data
    st = helper.make_tensor("shp", TensorProto.INT64, [2], [1, -1])            # int64_data
    dt = helper.make_tensor("k", TensorProto.DOUBLE, [1], [0.25])              # double_data
    nodes = [helper.make_node("Conv", ["x", "w32", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "k32"], ["m"], name="scale"),
             helper.make_node("Reshape", ["m", "shp"], ["y"], name="reshape")]
    # the engine converts float16/double to float32 at load; the graph uses them via names w32/k32
    g = helper.make_graph(nodes, "typed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[wt, bt, st, dt])
    # rename so the float16/double initializers feed the nodes directly (ONNX would need a Cast;
    # the engine widens every float type, which is what this model tests)
    g.initializer[0].name = "w32"
    g.initializer[3].name = "k32"
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="shoplens-tests")
    onnx.save(m, os.path.join(OUT, "typed_fields.onnx"))  # not checker-valid by design (types)
    y = (F.conv2d(T(x), T(w.astype(np.float32)), T(b), padding=1) * 0.25).reshape(1, -1)
    np.save(os.path.join(OUT, "typed_fields.in.npy"), x)
    np.save(os.path.join(OUT, "typed_fields.out.npy"), y.numpy().astype(np.float32))
    print("typed_fields: written")


def concat_nhwc():
    x = rnd(2, 3, 7, 7)
    w1, w2, w3 = rnd(4, 3, 3, 3, scale=0.3), rnd(5, 3, 1, 1, scale=0.3), rnd(6, 9, 3, 3, scale=0.2)
    cb = rnd(1, 9, 1, 1)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w2"], ["b"], name="c2"),
             helper.make_node("Concat", ["a", "b"], ["cat"], name="cat", axis=1),
             helper.make_node("Add", ["cat", "cb"], ["s"], name="bias"),
             helper.make_node("GlobalAveragePool", ["s"], ["g"], name="gap"),
             helper.make_node("Sigmoid", ["g"], ["gs"], name="gate"),
             helper.make_node("Mul", ["s", "gs"], ["se"], name="se"),
             helper.make_node("Conv", ["se", "w3"], ["y"], name="c3", strides=[2, 2])]
    t = T(x)
    s = torch.cat([F.conv2d(t, T(w1), padding=1), F.conv2d(t, T(w2))], 1) + T(cb)
    se = s * torch.sigmoid(s.mean((2, 3), keepdim=True))
    y = F.conv2d(se, T(w3), stride=2)
    save("concat_nhwc", graph("concat_nhwc", nodes, {"w1": w1, "w2": w2, "w3": w3, "cb": cb},
                              ["N", 3, 7, 7], "y", None), x, y.numpy())


# ---- quantized operators (QuantizeLinear, DequantizeLinear, QLinear*) -------------------------
# Reference values by numpy with onnxruntime's arithmetic in float32, in the order the engine
# computes it (src/nn/qlinear.c): exact integer sums, then float32 scale products, round half to
# even, zero point, saturation. The engine must match these bit for bit.

F32 = np.float32
qrng = np.random.default_rng(1717)  # own generator: the other models' numbers stay as they were
MS = "com.microsoft"


def qrnd(*shape, scale=1.0):
    return (qrng.standard_normal(shape) * scale).astype(np.float32)


def q_sat(v, zp, dt):
    info = np.iinfo(dt)
    v = np.clip(np.asarray(v, F32), F32(-1e9), F32(1e9))
    return np.clip(np.rint(v).astype(np.int64) + np.int64(zp), info.min, info.max).astype(dt)


def q_quantize(x, s, zp, axis=1):
    s, zp = np.asarray(s, F32), np.asarray(zp)
    if s.size > 1:
        shp = [1] * x.ndim
        shp[axis] = -1
        s, zp = s.reshape(shp), zp.reshape(shp)
    return q_sat(x.astype(F32) / s, zp.astype(np.int64), np.asarray(zp).dtype)


def q_dequantize(q, s, zp, axis=1):
    s, zp = np.asarray(s, F32), np.asarray(zp).astype(np.int64)
    if s.size > 1:
        shp = [1] * q.ndim
        shp[axis] = -1
        s, zp = s.reshape(shp), zp.reshape(shp)
    return (q.astype(np.int64) - zp).astype(F32) * s


def q_conv(x, xs, xz, w, ws, wz, ys, yz, b=None, strides=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1), group=1):
    xi = x.astype(np.int64) - np.int64(xz)
    wi = w.astype(np.int64) - np.asarray(wz).astype(np.int64).reshape(-1, 1, 1, 1)
    N, C, H, W = xi.shape
    O, I, KH, KW = wi.shape
    xp = np.pad(xi, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))  # padding = real 0
    OH = (H + pads[0] + pads[2] - dil[0] * (KH - 1) - 1) // strides[0] + 1
    OW = (W + pads[1] + pads[3] - dil[1] * (KW - 1) - 1) // strides[1] + 1
    acc = np.zeros((N, O, OH, OW), np.int64)
    og = O // group
    for g in range(group):
        xg = xp[:, g * I:(g + 1) * I]
        for ky in range(KH):
            for kx in range(KW):
                oy, ox = ky * dil[0], kx * dil[1]
                patch = xg[:, :, oy:oy + strides[0] * (OH - 1) + 1:strides[0], ox:ox + strides[1] * (OW - 1) + 1:strides[1]]
                acc[:, g * og:(g + 1) * og] += np.einsum("nihw,oi->nohw", patch, wi[g * og:(g + 1) * og, :, ky, kx])
    if b is not None:
        acc += b.astype(np.int64).reshape(1, -1, 1, 1)
    acc32 = acc.astype(np.int32).astype(F32)  # int32 as onnxruntime holds it (no overflow here)
    scale = (F32(xs) * np.asarray(ws, F32).reshape(-1) / F32(ys)).astype(F32)
    if scale.size == 1:
        scale = np.repeat(scale, O)
    return q_sat(acc32 * scale.reshape(1, -1, 1, 1), np.asarray(yz).astype(np.int64), np.asarray(yz).dtype)


def q_matmul(a, as_, az, b, bs, bz, ys, yz):
    acc = (a.astype(np.int64) - np.int64(az)) @ (b.astype(np.int64) - np.asarray(bz).astype(np.int64).reshape(1, -1))
    scale = (F32(as_) * np.asarray(bs, F32).reshape(1, -1) / F32(ys)).astype(F32)
    return q_sat(acc.astype(np.int32).astype(F32) * scale, np.int64(yz), np.asarray(yz).dtype)


def q_add(a, as_, az, b, bs, bz, cs, cz):
    ra, rb = F32(F32(as_) / F32(cs)), F32(F32(bs) / F32(cs))
    v = ra * (a.astype(np.int64) - np.int64(az)).astype(F32) + rb * (b.astype(np.int64) - np.int64(bz)).astype(F32)
    return q_sat(v.astype(F32), np.int64(cz), np.asarray(cz).dtype)


def q_gap(x, xs, xz, ys, yz, channels_last=False):
    axes = tuple(range(1, x.ndim - 1)) if channels_last else tuple(range(2, x.ndim))
    S = int(np.prod([x.shape[a] for a in axes]))
    acc = x.astype(np.int64).sum(axes, keepdims=True) - np.int64(xz) * S
    scale = F32(F32(xs) / F32(F32(ys) * F32(S)))
    return q_sat(acc.astype(np.int32).astype(F32) * scale, np.int64(yz), np.asarray(yz).dtype)


def qgraph(name, nodes, inits, in_shape, opset=13, ms=False):
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    ops = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(MS, 1)] if ms else [])
    return helper.make_model(g, opset_imports=ops, producer_name="shoplens-tests")


def u8(*v):
    return np.array(v, np.uint8) if len(v) != 1 else np.array(v[0], np.uint8)


def s8(*v):
    return np.array(v, np.int8) if len(v) != 1 else np.array(v[0], np.int8)


def qlinear_conv_chain():
    # Quantize -> grouped/strided/dilated conv (s8 weights, per-channel scales, bias) -> depthwise
    # with uint8 weights whose zero point 128 makes them int8 (oneDNN path) -> 1x1 with uint8
    # weights and zero points far from 128 (w - zw leaves int8: own kernel) into int8 -> 3x3 on
    # that int8 tensor -> Dequantize
    x = qrnd(2, 4, 9, 8)
    xs, xz = F32(0.04), u8(120)
    w1 = qrng.integers(-63, 64, (6, 2, 3, 3)).astype(np.int8)  # 7 bits: oneDNN also without VNNI
    ws1, wz1 = (qrng.random(6) * 0.01 + 0.002).astype(F32), np.zeros(6, np.int8)
    b1 = qrng.integers(-3000, 3000, 6).astype(np.int32)
    ys1, yz1 = F32(0.05), u8(10)
    w2 = qrng.integers(0, 256, (6, 1, 3, 3)).astype(np.uint8)
    ws2, wz2 = (qrng.random(6) * 0.01 + 0.005).astype(F32), np.full(6, 128, np.uint8)
    ys2, yz2 = F32(0.06), u8(0)
    w3 = qrng.integers(0, 256, (5, 6, 1, 1)).astype(np.uint8)
    ws3, wz3 = (qrng.random(5) * 0.01 + 0.002).astype(F32), np.array([0, 200, 30, 255, 128], np.uint8)
    ys3, yz3 = F32(0.07), s8(-5)
    w4 = qrng.integers(-127, 128, (4, 5, 3, 3)).astype(np.int8)
    ws4, wz4 = F32(0.004), s8(0)
    ys4, yz4 = F32(0.03), u8(7)
    inits = {"xs": xs, "xz": xz, "w1": w1, "ws1": ws1, "wz1": wz1, "b1": b1, "ys1": ys1, "yz1": yz1,
             "w2": w2, "ws2": ws2, "wz2": wz2, "ys2": ys2, "yz2": yz2, "w3": w3, "ws3": ws3, "wz3": wz3,
             "ys3": ys3, "yz3": yz3, "w4": w4, "ws4": ws4, "wz4": wz4, "ys4": ys4, "yz4": yz4}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q0"], name="quant"),
             helper.make_node("QLinearConv", ["q0", "xs", "xz", "w1", "ws1", "wz1", "ys1", "yz1", "b1"], ["q1"],
                              name="conv_g2", group=2, strides=[2, 2], pads=[1, 0, 2, 1], dilations=[2, 2]),
             helper.make_node("QLinearConv", ["q1", "ys1", "yz1", "w2", "ws2", "wz2", "ys2", "yz2"], ["q2"],
                              name="conv_dw_u8w", group=6, pads=[1, 1, 1, 1]),
             helper.make_node("QLinearConv", ["q2", "ys2", "yz2", "w3", "ws3", "wz3", "ys3", "yz3"], ["q3"],
                              name="conv_1x1_wide_zp"),
             helper.make_node("QLinearConv", ["q3", "ys3", "yz3", "w4", "ws4", "wz4", "ys4", "yz4"], ["q4"],
                              name="conv_s8_in", pads=[1, 1, 1, 1]),
             helper.make_node("DequantizeLinear", ["q4", "ys4", "yz4"], ["y"], name="dequant")]
    q0 = q_quantize(x, xs, xz)
    q1 = q_conv(q0, xs, xz, w1, ws1, wz1, ys1, yz1, b1, strides=(2, 2), pads=(1, 0, 2, 1), dil=(2, 2), group=2)
    q2 = q_conv(q1, ys1, yz1, w2, ws2, wz2, ys2, yz2, pads=(1, 1, 1, 1), group=6)
    q3 = q_conv(q2, ys2, yz2, w3, ws3, wz3, ys3, yz3)
    q4 = q_conv(q3, ys3, yz3, w4, ws4, wz4, ys4, yz4, pads=(1, 1, 1, 1))
    y = q_dequantize(q4, ys4, yz4)
    save("qlinear_conv", qgraph("qlinear_conv", nodes, inits, ["N", 4, 9, 8], opset=10), x, y)


def qlinear_head():
    # 1x1 QLinearConv (channels-last output) -> QLinearAdd of a broadcast uint8 constant -> QLinearAdd
    # of two equal shapes -> QLinearGlobalAveragePool -> Reshape (uint8) -> QLinearMatMul with
    # per-column scales and zero points -> Dequantize: the zoo classifier's shape
    x = qrnd(2, 8, 5, 6)
    xs, xz = F32(0.02), u8(128)
    w = qrng.integers(-100, 101, (8, 8, 1, 1)).astype(np.int8)
    ws, wz = (qrng.random(8) * 0.02 + 0.01).astype(F32), np.zeros(8, np.int8)
    cs, cz = F32(0.03), u8(100)
    bias = qrng.integers(0, 256, (1, 8, 1, 1)).astype(np.uint8)
    bs, bz = F32(0.01), u8(90)
    a1s, a1z = F32(0.035), u8(110)
    a2s, a2z = F32(0.05), u8(120)
    gs, gz = F32(0.02), u8(95)
    mw = qrng.integers(0, 256, (8, 10)).astype(np.uint8)
    mws, mwz = (qrng.random(10) * 0.01 + 0.005).astype(F32), qrng.integers(100, 156, 10).astype(np.uint8)
    ms_, mz = F32(0.04), u8(130)
    shp = np.array([0, -1], np.int64)
    inits = {"xs": xs, "xz": xz, "w": w, "ws": ws, "wz": wz, "cs": cs, "cz": cz, "bias": bias, "bs": bs, "bz": bz,
             "a1s": a1s, "a1z": a1z, "a2s": a2s, "a2z": a2z, "gs": gs, "gz": gz, "mw": mw, "mws": mws, "mwz": mwz,
             "ms": ms_, "mz": mz, "shp": shp}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q0"], name="quant"),
             helper.make_node("QLinearConv", ["q0", "xs", "xz", "w", "ws", "wz", "cs", "cz"], ["c"], name="pw"),
             helper.make_node("QLinearAdd", ["c", "cs", "cz", "bias", "bs", "bz", "a1s", "a1z"], ["a1"],
                              name="add_bcast", domain=MS),
             helper.make_node("QLinearAdd", ["a1", "a1s", "a1z", "c", "cs", "cz", "a2s", "a2z"], ["a2"],
                              name="add_same", domain=MS),
             helper.make_node("QLinearGlobalAveragePool", ["a2", "a2s", "a2z", "gs", "gz"], ["g"], name="gap",
                              domain=MS, channels_last=0),
             helper.make_node("Reshape", ["g", "shp"], ["r"], name="flatten"),
             helper.make_node("QLinearMatMul", ["r", "gs", "gz", "mw", "mws", "mwz", "ms", "mz"], ["mm"], name="fc"),
             helper.make_node("DequantizeLinear", ["mm", "ms", "mz"], ["y"], name="dequant")]
    q0 = q_quantize(x, xs, xz)
    c = q_conv(q0, xs, xz, w, ws, wz, cs, cz)
    a1 = q_add(c, cs, cz, bias, bs, bz, a1s, a1z)
    a2 = q_add(a1, a1s, a1z, c, cs, cz, a2s, a2z)
    g = q_gap(a2, a2s, a2z, gs, gz)
    mm = q_matmul(g.reshape(2, -1), gs, gz, mw, mws, mwz, ms_, mz)
    y = q_dequantize(mm, ms_, mz)
    save("qlinear_head", qgraph("qlinear_head", nodes, inits, ["N", 8, 5, 6], ms=True), x, y)


def qlinear_axis():
    # per-axis Quantize/Dequantize (axis 1 into int8, axis -1 into uint8), a Transpose and a
    # Concat of quantized tensors, and a channels_last QLinearGlobalAveragePool on int8
    x = qrnd(2, 3, 4, 5) * F32(3)
    s1, z1 = np.array([0.02, 0.05, 0.1], F32), np.array([-3, 0, 7], np.int8)
    s2, z2 = np.array([0.03, 0.04, 0.05, 0.06, 0.07], F32), np.array([128, 100, 140, 128, 90], np.uint8)
    gs, gz = F32(0.02), s8(1)
    inits = {"s1": s1, "z1": z1, "s2": s2, "z2": z2, "gs": gs, "gz": gz, "s1t": F32(0.05), "z1t": s8(0)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s1", "z1"], ["a"], name="q_axis1", axis=1),
             helper.make_node("DequantizeLinear", ["a", "s1", "z1"], ["da"], name="dq_axis1", axis=1),
             helper.make_node("QuantizeLinear", ["x", "s2", "z2"], ["b"], name="q_axis_last", axis=-1),
             helper.make_node("DequantizeLinear", ["b", "s2", "z2"], ["db"], name="dq_axis_last", axis=-1),
             helper.make_node("QuantizeLinear", ["x", "s1t", "z1t"], ["t"], name="q_tensor"),
             helper.make_node("Transpose", ["t"], ["tt"], name="to_nhwc", perm=[0, 2, 3, 1]),
             helper.make_node("Concat", ["tt", "tt"], ["tc"], name="cat", axis=3),
             helper.make_node("QLinearGlobalAveragePool", ["tc", "s1t", "z1t", "gs", "gz"], ["g"], name="gap_cl",
                              domain=MS, channels_last=1),
             helper.make_node("DequantizeLinear", ["g", "gs", "gz"], ["dg"], name="dq_gap"),
             helper.make_node("Add", ["da", "db"], ["ab"], name="add"),
             helper.make_node("Flatten", ["ab"], ["fa"], name="fa"),
             helper.make_node("Flatten", ["dg"], ["fg"], name="fg"),
             helper.make_node("Concat", ["fa", "fg"], ["y"], name="out", axis=1)]
    da = q_dequantize(q_quantize(x, s1, z1, 1), s1, z1, 1)
    db = q_dequantize(q_quantize(x, s2, z2, 3), s2, z2, 3)
    t = q_quantize(x, F32(0.05), s8(0))
    tc = np.concatenate([t.transpose(0, 2, 3, 1)] * 2, 3)
    dg = q_dequantize(q_gap(tc, F32(0.05), s8(0), gs, gz, channels_last=True), gs, gz)
    y = np.concatenate([(da + db).reshape(2, -1), dg.reshape(2, -1)], 1)
    save("qlinear_axis", qgraph("qlinear_axis", nodes, inits, ["N", 3, 4, 5], ms=True), x, y)


def qdq_conv():
    # QDQ format (what onnxruntime writes with QuantFormat.QDQ): int8 weights behind a
    # per-channel DequantizeLinear (folded at load), activations through Quantize/Dequantize pairs
    x = qrnd(2, 3, 8, 8)
    wq = qrng.integers(-127, 128, (5, 3, 3, 3)).astype(np.int8)
    wsc = (qrng.random(5) * 0.01 + 0.005).astype(F32)
    b = qrnd(5, scale=0.1)
    inits = {"xs": F32(0.03), "xz": s8(2), "wq": wq, "wsc": wsc, "wz": np.zeros(5, np.int8), "b": b,
             "ys": F32(0.02), "yz": u8(0)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="xq"),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="xd"),
             helper.make_node("DequantizeLinear", ["wq", "wsc", "wz"], ["w"], name="wd", axis=0),
             helper.make_node("Conv", ["xd", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["rq"], name="rq"),
             helper.make_node("DequantizeLinear", ["rq", "ys", "yz"], ["y"], name="rd")]
    xd = q_dequantize(q_quantize(x, F32(0.03), s8(2)), F32(0.03), s8(2))
    w = q_dequantize(wq, wsc, np.zeros(5, np.int8), 0)
    r = F.relu(F.conv2d(T(xd), T(w), T(b), padding=1)).numpy()
    y = q_dequantize(q_quantize(r, F32(0.02), u8(0)), F32(0.02), u8(0))
    save("qdq_conv", qgraph("qdq_conv", nodes, inits, ["N", 3, 8, 8]), x, y)


def qlinear_io():
    # a uint8 graph input (sl_nn_run takes floats and rounds/saturates them to uint8) and an int8
    # graph output (returned as its integer values): Dequantize -> Mul -> Quantize
    x = np.array([[0, 1, 2, 127, 128, 255], [3, 250, 7, 100, 64, 200]], F32)
    s, z, s2, z2 = F32(0.5), u8(3), F32(0.7), s8(-4)
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["d"], name="dq"),
             helper.make_node("Mul", ["d", "k"], ["m"], name="mul"),
             helper.make_node("QuantizeLinear", ["m", "s2", "z2"], ["y"], name="q")]
    g = helper.make_graph(nodes, "qlinear_io", [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 6])],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
                          initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in
                                       {"s": s, "z": z, "s2": s2, "z2": z2, "k": F32(-1.5)}.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="shoplens-tests")
    y = q_quantize(q_dequantize(x.astype(np.uint8), s, z) * F32(-1.5), s2, z2).astype(F32)
    save("qlinear_io", m, x, y)


def qlinear_bad():
    # models the engine must refuse with a clear message (tests/test_nn.c)
    def conv(name, over):
        p = {"xs": F32(0.1), "xz": u8(0), "w": np.ones((2, 1, 1, 1), np.int8), "ws": np.ones(2, F32),
             "wz": np.zeros(2, np.int8), "ys": F32(0.1), "yz": u8(0), "qs": F32(0.1), "qz": u8(0)}
        p.update(over)
        nodes = [helper.make_node("QuantizeLinear", ["x", "qs", "qz"], ["q"], name="q"),
                 helper.make_node("QLinearConv", ["q", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["c"], name="qconv"),
                 helper.make_node("DequantizeLinear", ["c", "ys", "yz"], ["y"], name="dq")]
        onnx.save(qgraph(name, nodes, p, ["N", 1, 3, 3]), os.path.join(OUT, name + ".onnx"))
    conv("qbad_zp_int32", {"xz": np.array(0, np.int32)})           # unsupported zero point type
    conv("qbad_wscale_len", {"ws": np.ones(3, F32)})                # per-channel scale of bad length
    conv("qbad_wzp_len", {"wz": np.zeros(3, np.int8)})              # per-channel zero point of bad length
    conv("qbad_scale_zero", {"ys": F32(0.0)})                       # scale 0
    conv("qbad_w_float", {"w": np.ones((2, 1, 1, 1), F32)})         # float weights
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q_axis", axis=1),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq", axis=1)]
    onnx.save(qgraph("qbad_axis_len", nodes, {"s": np.ones(5, F32), "z": np.zeros(5, np.uint8)}, ["N", 3, 2]),
              os.path.join(OUT, "qbad_axis_len.onnx"))
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
             helper.make_node("Relu", ["q"], ["y"], name="relu_on_uint8")]
    onnx.save(qgraph("qbad_relu_u8", nodes, {"s": F32(0.1), "z": u8(0)}, ["N", 3]),
              os.path.join(OUT, "qbad_relu_u8.onnx"))
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], name="mean", keepdims=0),
             helper.make_node("QuantizeLinear", ["x", "m"], ["q"], name="q_dynamic"),
             helper.make_node("DequantizeLinear", ["q", "m"], ["y"], name="dq")]
    onnx.save(qgraph("qbad_dynamic_scale", nodes, {}, [1, 3]), os.path.join(OUT, "qbad_dynamic_scale.onnx"))
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
             helper.make_node("QLinearSigmoid", ["q", "s", "z", "s", "z"], ["qs"], name="qsig", domain=MS),
             helper.make_node("DequantizeLinear", ["qs", "s", "z"], ["y"], name="dq")]
    onnx.save(qgraph("qbad_ms_op", nodes, {"s": F32(0.1), "z": u8(0)}, ["N", 3], ms=True),
              os.path.join(OUT, "qbad_ms_op.onnx"))
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["a"], name="q"),
             helper.make_node("QLinearAdd", ["a", "s", "z", "a", "s", "zs", "s", "z"], ["c"], name="qadd", domain=MS),
             helper.make_node("DequantizeLinear", ["c", "s", "z"], ["y"], name="dq")]
    onnx.save(qgraph("qbad_zp_mismatch", nodes, {"s": F32(0.1), "z": u8(0), "zs": s8(0)}, ["N", 3], ms=True),
              os.path.join(OUT, "qbad_zp_mismatch.onnx"))
    print("qbad_*: written")


def calib_sensitive():
    # an fp32 network with one convolution that no reduced precision survives: conv1 makes two
    # almost equal channels (weights x 1 and x 1.001), conv2 takes 500 x their difference plus
    # small terms - catastrophic cancellation, as in MobileNetV2's first depthwise layer. The
    # calibration must keep conv2 at fp32 (tests/test_nn.c); no reference output is needed.
    w1 = qrnd(4, 3, 3, 3, scale=0.4)
    w1[1] = w1[0] * F32(1.001)
    w2 = np.zeros((4, 4, 1, 1), F32)
    w2[0, :, 0, 0] = [500.0, -499.5, 0.3, 0.2]
    w2[1:, :, 0, 0] = qrnd(3, 4, scale=0.5)
    w3 = qrnd(6, 4, 1, 1, scale=0.5)
    calib_net("calib_sensitive", "conv2_cancels", w1, w2, w3)


def calib_net(name, conv2, w1, w2, w3):
    # conv1 (3x3) - Relu - conv2 (1x1, named conv2) - conv3 (1x1) - Relu - GlobalAveragePool
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu1"),
             helper.make_node("Conv", ["r", "w2"], ["b"], name=conv2),
             helper.make_node("Conv", ["b", "w3"], ["c"], name="conv3"),
             helper.make_node("Relu", ["c"], ["cr"], name="relu3"),
             helper.make_node("GlobalAveragePool", ["cr"], ["y"], name="pool")]
    onnx.save(qgraph(name, nodes, {"w1": w1, "w2": w2, "w3": w3}, ["N", 3, 8, 8]), os.path.join(OUT, name + ".onnx"))
    print(name + ": written")


def calib_outlier():
    # an fp32 network with one convolution that int8 does not survive but bf16 does: conv1's
    # channel 0 is 1000x the others, so conv2_outlier's input gets one int8 step for all its
    # channels (a regular 1x1 convolution, not depthwise: no per-channel steps) and the small
    # channels, which carry most of its output, round to a few levels; bf16 keeps 8 bits of
    # every value. The int8 calibration keeps conv2_outlier out of int8, at bf16 where the CPU
    # has bf16 dot products (tests/test_nn.c). Own generator: the other models stay as they were.
    r = np.random.default_rng(4711)
    w1 = (r.standard_normal((4, 3, 3, 3)) * 0.4).astype(F32)
    w1[0] *= F32(1000.0)
    w2 = (r.standard_normal((4, 4, 1, 1)) * 0.5).astype(F32)
    w2[:, 0] *= F32(1e-4)
    w3 = (r.standard_normal((6, 4, 1, 1)) * 0.5).astype(F32)
    calib_net("calib_outlier", "conv2_outlier", w1, w2, w3)


def quantized():
    qlinear_conv_chain()
    qlinear_head()
    qlinear_axis()
    qdq_conv()
    qlinear_io()
    qlinear_bad()
    calib_sensitive()
    calib_outlier()


# ---- tiny networks exported from PyTorch ----------------------------------------------------

def randomize_bn(model):
    g = torch.Generator().manual_seed(7)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)


def cbr(i, o, k=3, s=1, g=1, act=nn.ReLU):
    return nn.Sequential(nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(o), act())


class Basic(nn.Module):
    def __init__(self, i, o, s):
        super().__init__()
        self.a = cbr(i, o, 3, s)
        self.b = nn.Sequential(nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o))
        self.down = nn.Sequential(nn.Conv2d(i, o, 1, s, bias=False), nn.BatchNorm2d(o)) if s != 1 or i != o else None

    def forward(self, x):
        idt = self.down(x) if self.down is not None else x
        return F.relu(self.b(self.a(x)) + idt)


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.l1 = Basic(8, 8, 1)
        self.l2 = Basic(8, 16, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.l2(self.l1(self.stem(x)))), 1))


class InvRes(nn.Module):
    def __init__(self, i, o, s, e):
        super().__init__()
        h = i * e
        self.use = s == 1 and i == o
        self.m = nn.Sequential(cbr(i, h, 1, act=nn.ReLU6), cbr(h, h, 3, s, h, act=nn.ReLU6),
                               nn.Conv2d(h, o, 1, bias=False), nn.BatchNorm2d(o))

    def forward(self, x):
        return x + self.m(x) if self.use else self.m(x)


class TinyMBv2(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(cbr(3, 8, 3, 2, act=nn.ReLU6), InvRes(8, 8, 1, 2), InvRes(8, 12, 2, 3),
                               InvRes(12, 12, 1, 3), cbr(12, 32, 1, act=nn.ReLU6))
        self.c = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 10))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.f(x), (1, 1))
        return self.c(torch.flatten(x, 1))


class SE(nn.Module):
    def __init__(self, c, r, gate):
        super().__init__()
        self.a = nn.Conv2d(c, r, 1)
        self.b = nn.Conv2d(r, c, 1)
        self.act = nn.ReLU() if gate is nn.Hardsigmoid else nn.SiLU()
        self.gate = gate()

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.b(self.act(self.a(s))))


class MBv3Block(nn.Module):
    def __init__(self, i, h, o, k, s, act):
        super().__init__()
        self.use = s == 1 and i == o
        self.m = nn.Sequential(cbr(i, h, 1, act=act), cbr(h, h, k, s, h, act=act), SE(h, max(4, h // 4), nn.Hardsigmoid),
                               nn.Conv2d(h, o, 1, bias=False), nn.BatchNorm2d(o))

    def forward(self, x):
        return x + self.m(x) if self.use else self.m(x)


class TinyMBv3(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(cbr(3, 8, 3, 2, act=nn.Hardswish), MBv3Block(8, 16, 8, 3, 1, nn.ReLU),
                               MBv3Block(8, 24, 12, 5, 2, nn.Hardswish), cbr(12, 32, 1, act=nn.Hardswish))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.c = nn.Sequential(nn.Linear(32, 24), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(24, 10))

    def forward(self, x):
        return self.c(torch.flatten(self.pool(self.f(x)), 1))


class MBConv(nn.Module):
    def __init__(self, i, o, k, s, e):
        super().__init__()
        h = i * e
        self.use = s == 1 and i == o
        self.m = nn.Sequential(cbr(i, h, 1, act=nn.SiLU), cbr(h, h, k, s, h, act=nn.SiLU), SE(h, max(2, i // 4), nn.Sigmoid),
                               nn.Conv2d(h, o, 1, bias=False), nn.BatchNorm2d(o))

    def forward(self, x):
        return x + self.m(x) if self.use else self.m(x)


class TinyEffNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(cbr(3, 8, 3, 2, act=nn.SiLU), MBConv(8, 8, 3, 1, 1), MBConv(8, 12, 5, 2, 4),
                               MBConv(12, 12, 3, 1, 4), cbr(12, 40, 1, act=nn.SiLU))
        self.c = nn.Sequential(nn.Dropout(0.2), nn.Linear(40, 10))

    def forward(self, x):
        return self.c(torch.flatten(F.adaptive_avg_pool2d(self.f(x), 1), 1))


def export(name, model, size=32, batch=2, opset=13):
    randomize_bn(model)
    model.eval()
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(11))
    path = os.path.join(OUT, name + ".onnx")
    torch.onnx.export(model, x, path, opset_version=opset, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, do_constant_folding=True)
    with torch.no_grad():
        y = model(x)
    np.save(os.path.join(OUT, name + ".in.npy"), x.numpy())
    np.save(os.path.join(OUT, name + ".out.npy"), y.numpy())
    print(f"{name}: exported ({os.path.getsize(path)} bytes)")


def unsupported_op():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="first"),
             helper.make_node("Erf", ["r"], ["y"], name="the_erf_node")]
    m = graph("unsupported", nodes, {}, ["N", 2], "y", None)
    onnx.save(m, os.path.join(OUT, "unsupported_op.onnx"))
    print("unsupported_op: written")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    if len(sys.argv) > 2 and sys.argv[2] == "quantized":   # only the quantized-operator models
        quantized()
        sys.exit(0)
    conv_variants()
    bn_acts()
    pools()
    conv3x3_residual()
    shape_arith()
    math_ops()
    opset11()
    typed_fields()
    concat_nhwc()
    unsupported_op()
    export("tiny_resnet", TinyResNet())
    export("tiny_mbv2", TinyMBv2())
    export("tiny_mbv3", TinyMBv3())
    export("tiny_effnet", TinyEffNet())
    export("tiny_resnet_op11", TinyResNet(), opset=11)
    export("tiny_mbv3_op17", TinyMBv3(), opset=17)   # HardSwish as its own operator (opset >= 14)
    quantized()
