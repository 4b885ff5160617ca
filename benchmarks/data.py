"""The same random input and weights for every engine, in TF's layouts (NHWC)."""
import numpy as np


def make_arrays(layer, batch, seed=0):
    """float32 arrays: ``x [N,H,W,C]``, ``dw [3,3,C,1]``, ``pw [1,1,C,O]``, ``b [O]``, ``cot``.

    ``cot`` is the output gradient fed to the training step.
    """
    rng = np.random.default_rng(seed)
    out = layer.out_size()
    scale = 1.0 / np.sqrt(layer.kernel ** 2)
    return {
        "x": rng.standard_normal((batch, layer.size, layer.size, layer.channels), np.float32),
        "dw": (rng.standard_normal((layer.kernel, layer.kernel, layer.channels, 1), np.float32)
               * scale).astype(np.float32),
        "pw": (rng.standard_normal((1, 1, layer.channels, layer.outputs), np.float32)
               / np.sqrt(layer.channels)).astype(np.float32),
        "b": rng.standard_normal((layer.outputs,), np.float32) * 0.1,
        "cot": rng.standard_normal((batch, out, out, layer.outputs), np.float32),
    }


def tf_same_pads(size, kernel, stride):
    """TF's SAME padding ``(before, after)`` (the odd pixel goes after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2
