#!/usr/bin/python3
"""Exports torchvision models with random weights (fixed seed, BatchNorm statistics randomized so
outputs are not degenerate) to ONNX at opset 13 with a dynamic batch axis. Shared by
bench/cnn_verify/verify.py and bench/cnn/speed.py. No weights are downloaded."""
import os

import torch
import torchvision

MODELS = {
    "resnet50": lambda: torchvision.models.resnet50(weights=None),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(weights=None),
    "mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(weights=None),
    "efficientnet_b0": lambda: torchvision.models.efficientnet_b0(weights=None),
    "resnet18": lambda: torchvision.models.resnet18(weights=None),
    "resnet34": lambda: torchvision.models.resnet34(weights=None),
    "resnet101": lambda: torchvision.models.resnet101(weights=None),
    "mobilenet_v3_large": lambda: torchvision.models.mobilenet_v3_large(weights=None),
    "vgg16": lambda: torchvision.models.vgg16(weights=None),  # 528 MB file: the large-file check
    "squeezenet1_1": lambda: torchvision.models.squeezenet1_1(weights=None),
}


def make(name, seed=0):
    torch.manual_seed(seed)
    m = MODELS[name]()
    g = torch.Generator().manual_seed(seed + 1)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            mod.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            mod.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return m.eval()


def export(name, outdir, size=224, opset=13):
    path = os.path.join(outdir, name + (".onnx" if opset == 13 else ".op%d.onnx" % opset))
    m = make(name)
    if not os.path.exists(path):
        x = torch.randn(1, 3, size, size)
        torch.onnx.export(m, x, path, opset_version=opset, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                          do_constant_folding=True)
    return m, path
