"""In-process engines: sepconv, the usual PyTorch port (NCHW) and PyTorch channels_last.

Each engine gets the suite's arrays in TF's layouts and converts them once,
untimed, to its own natural layout: sepconv and TF take NHWC, the PyTorch
ports hold NCHW (or channels_last) tensors as their users would.
"""
import contextlib

import numpy as np
import torch
from torch import nn

from sepconv._src import ops

from .data import tf_same_pads
from .timing import time_calls


class TorchEngine:
    """Common shape: ``setup`` builds ``self._step``; ``time`` runs it."""

    name = "?"

    def setup(self, layer, mode, arrays):
        """Prepares one layer/mode. Returns the NHWC forward output (inference) or None."""
        self._training = mode.training
        self._build(layer, arrays, mode.training)
        if mode.training:
            self._step = self._train_step
            return None
        self._step = self._forward
        with torch.no_grad():
            return self._to_nhwc(self._forward()).numpy().copy()

    def time(self, count):
        guard = contextlib.nullcontext() if self._training else torch.no_grad()
        with guard:
            return time_calls(self._step, count)

    def _train_step(self):
        return torch.autograd.grad(self._forward(), self._wrt, self._cotangent)

    def close(self):
        self._step = self._forward = None


class SepconvEngine(TorchEngine):
    """``sepconv``'s functional core on NHWC input, TF-layout weights, fused ReLU."""

    name = "sepconv"

    def _build(self, layer, arrays, training):
        tensors = {k: torch.from_numpy(arrays[k]) for k in ("x", "dw", "pw", "b")}
        if training:
            tensors = {k: t.requires_grad_(True) for k, t in tensors.items()}
        x, dw, pw, b = tensors["x"], tensors["dw"], tensors["pw"], tensors["b"]
        stride = (layer.stride, layer.stride)
        self._forward = lambda: ops.separable_conv2d(x, dw, pw, b, stride=stride,
                                                     padding="SAME", activation="relu")
        self._wrt = (x, dw, pw, b)
        self._cotangent = torch.from_numpy(arrays["cot"])

    @staticmethod
    def _to_nhwc(y):
        return y


class NaiveTorchEngine(TorchEngine):
    """The usual port: ``nn.Conv2d(groups=C)`` then a 1x1 ``nn.Conv2d``, NCHW.

    TF's asymmetric SAME padding needs an ``nn.ZeroPad2d`` in front, as a
    correct port has; the ReLU is ``nn.ReLU()``.
    """

    name = "torch-nchw"
    memory_format = torch.contiguous_format
    inplace_relu = False

    def _build(self, layer, arrays, training):
        channels, outputs = layer.channels, layer.outputs
        (top, bottom), (left, right) = [tf_same_pads(layer.size, layer.kernel, layer.stride)] * 2
        symmetric = top == bottom
        depthwise = nn.Conv2d(channels, channels, layer.kernel, layer.stride,
                              padding=top if symmetric else 0, groups=channels, bias=False)
        pointwise = nn.Conv2d(channels, outputs, 1)
        with torch.no_grad():
            depthwise.weight.copy_(torch.from_numpy(arrays["dw"].transpose(2, 3, 0, 1)))
            pointwise.weight.copy_(torch.from_numpy(arrays["pw"].transpose(3, 2, 0, 1)))
            pointwise.bias.copy_(torch.from_numpy(arrays["b"]))
        stages = [] if symmetric else [nn.ZeroPad2d((left, right, top, bottom))]
        model = nn.Sequential(*stages, depthwise, pointwise, nn.ReLU(inplace=self.inplace_relu))
        model = model.to(memory_format=self.memory_format)
        x = torch.from_numpy(np.ascontiguousarray(arrays["x"].transpose(0, 3, 1, 2)))
        x = x.contiguous(memory_format=self.memory_format).requires_grad_(training)
        model.requires_grad_(training)
        self._forward = lambda: model(x)
        self._wrt = (x, depthwise.weight, pointwise.weight, pointwise.bias)
        cotangent = torch.from_numpy(np.ascontiguousarray(arrays["cot"].transpose(0, 3, 1, 2)))
        self._cotangent = cotangent.contiguous(memory_format=self.memory_format)

    @staticmethod
    def _to_nhwc(y):
        return y.permute(0, 2, 3, 1)


class ChannelsLastTorchEngine(NaiveTorchEngine):
    """The same modules and input in ``torch.channels_last``, with an in-place ReLU."""

    name = "torch-channels-last"
    memory_format = torch.channels_last
    inplace_relu = True


ENGINES = (SepconvEngine, NaiveTorchEngine, ChannelsLastTorchEngine)
