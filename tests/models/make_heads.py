#!/usr/bin/python3
"""Tiny models with the classifier heads of common CNN families, for the default embedding
choice (src/nn/graph.c: the pooled features before the classifier, never class scores), and an
NHWC-input model. onnx.helper + numpy only (no PyTorch): every layer is a 1x1 convolution, an
activation, a pool or a Gemm, so numpy computes the expected tensors directly.

Run with Debian's python:  /usr/bin/python3 tests/models/make_heads.py [OUTDIR]
For each NAME: NAME.onnx, NAME.in.npy (batch 2) and NAME.emb.npy, the tensor the default
embedding must be (before L2 normalization).
"""
import os
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(77)


def rnd(*shape, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def conv1x1(x, w):  # x N,C,H,W; w O,C,1,1
    return np.einsum("nchw,oc->nohw", x, w[:, :, 0, 0]).astype(np.float32)


def save(name, nodes, inits, in_shape, outputs, x, emb):
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    g = helper.make_graph(nodes, name, [inp], outs,
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="shoplens-tests")
    with open(os.path.join(OUT, name + ".onnx"), "wb") as f:
        f.write(m.SerializeToString())
    np.save(os.path.join(OUT, name + ".in.npy"), np.ascontiguousarray(x, np.float32))
    np.save(os.path.join(OUT, name + ".emb.npy"), np.ascontiguousarray(emb, np.float32))
    print(f"{name}: in {x.shape} embedding {emb.shape}")


relu = lambda a: np.maximum(a, 0)
N = helper.make_node

# SqueezeNet: features -> Dropout -> 1x1 conv classifier -> Relu -> global pool -> Flatten.
# The embedding is the global average pool of the classifier conv's input (not in the graph).
x = rnd(2, 3, 6, 5, scale=1.0)
w1, w2 = rnd(8, 3, 1, 1), rnd(10, 8, 1, 1)
feat = relu(conv1x1(x, w1))
save("head_convclass",
     [N("Conv", ["x", "w1"], ["c1"]), N("Relu", ["c1"], ["feat"]), N("Dropout", ["feat"], ["d"]),
      N("Conv", ["d", "w2"], ["c2"]), N("Relu", ["c2"], ["r2"]), N("GlobalAveragePool", ["r2"], ["p"]),
      N("Flatten", ["p"], ["logits"])],
     {"w1": w1, "w2": w2}, ["N", 3, 6, 5], ["logits"], x, feat.mean(axis=(2, 3), keepdims=True))

# MobileNetV2: last 1x1 conv (expansion) -> Clip -> global pool -> Flatten -> Gemm. The conv
# before the pool is part of the features: the classifier is the Gemm after the pool.
x = rnd(2, 3, 5, 5, scale=1.0)
w1, w2, wf, bf = rnd(8, 3, 1, 1), rnd(12, 8, 1, 1), rnd(10, 12), rnd(10)
lo, hi = np.array(0, np.float32), np.array(6, np.float32)
a = np.clip(conv1x1(np.clip(conv1x1(x, w1), 0, 6), w2), 0, 6)
save("head_gemm",
     [N("Conv", ["x", "w1"], ["c1"]), N("Clip", ["c1", "lo", "hi"], ["a1"]), N("Conv", ["a1", "w2"], ["c2"]),
      N("Clip", ["c2", "lo", "hi"], ["a2"]), N("GlobalAveragePool", ["a2"], ["p"]), N("Flatten", ["p"], ["f"]),
      N("Gemm", ["f", "wf", "bf"], ["logits"], transB=1)],
     {"w1": w1, "w2": w2, "wf": wf, "bf": bf, "lo": lo, "hi": hi}, ["N", 3, 5, 5], ["logits"], x,
     a.mean(axis=(2, 3), keepdims=True))

# timm style: ReduceMean over the spatial axes (keepdims 0) -> Gemm -> Softmax.
x = rnd(2, 3, 4, 6, scale=1.0)
w1, wf = rnd(8, 3, 1, 1), rnd(8, 5)
a = relu(conv1x1(x, w1))
save("head_reducemean",
     [N("Conv", ["x", "w1"], ["c1"]), N("Relu", ["c1"], ["a1"]),
      N("ReduceMean", ["a1"], ["p"], axes=[2, 3], keepdims=0), N("MatMul", ["p", "wf"], ["z"]),
      N("Softmax", ["z"], ["prob"], axis=1)],
     {"w1": w1, "wf": wf}, ["N", 3, 4, 6], ["prob"], x, a.mean(axis=(2, 3)))

# VGG style: no global pool; Flatten -> Gemm -> Relu -> Gemm: the input of the last Gemm.
x = rnd(2, 3, 2, 2, scale=1.0)
w1, wa, wb = rnd(4, 3, 1, 1), rnd(16, 16), rnd(10, 16)
h = relu(relu(conv1x1(x, w1)).reshape(2, 16) @ wa.T)
save("head_fc",
     [N("Conv", ["x", "w1"], ["c1"]), N("Relu", ["c1"], ["a1"]), N("Flatten", ["a1"], ["f"]),
      N("Gemm", ["f", "wa"], ["h"], transB=1), N("Relu", ["h"], ["hr"]), N("Gemm", ["hr", "wb"], ["logits"], transB=1)],
     {"w1": w1, "wa": wa, "wb": wb}, ["N", 3, 2, 2], ["logits"], x, h)

# TensorFlow/Keras style input: NHWC image, Transpose to NCHW, conv, pool, Gemm.
x = rnd(2, 32, 32, 3, scale=1.0)
w1, wf = rnd(8, 3, 1, 1), rnd(10, 8)
a = relu(conv1x1(x.transpose(0, 3, 1, 2), w1))
save("head_nhwc",
     [N("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]), N("Conv", ["t", "w1"], ["c1"]), N("Relu", ["c1"], ["a1"]),
      N("GlobalAveragePool", ["a1"], ["p"]), N("Flatten", ["p"], ["f"]),
      N("Gemm", ["f", "wf"], ["logits"], transB=1)],
     {"w1": w1, "wf": wf}, ["N", 32, 32, 3], ["logits"], x, a.mean(axis=(2, 3), keepdims=True))
