"""The layers and modes of the suite, and their work (FLOPs and bytes).

Every layer is depthwise 3x3 (TF SAME padding), pointwise 1x1, bias and ReLU,
in float32: the separable layers of MobileNet v1 at 224x224 and Xception's
middle-flow layer.
"""
from dataclasses import asdict, dataclass

BYTES_PER_FLOAT = 4


@dataclass(frozen=True)
class Layer:
    """One separable layer: input ``size x size x channels``, ``outputs`` filters."""

    name: str
    size: int
    channels: int
    outputs: int
    stride: int = 1
    kernel: int = 3

    def out_size(self):
        return -(-self.size // self.stride)

    def as_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class Mode:
    """A way to run a layer: a batch size, and inference or a training step."""

    name: str
    batch: int
    training: bool


LAYERS = (
    Layer("mnv1-112x32-64", 112, 32, 64),
    Layer("mnv1-112x64-128-s2", 112, 64, 128, stride=2),
    Layer("mnv1-56x128-128", 56, 128, 128),
    Layer("mnv1-56x128-256-s2", 56, 128, 256, stride=2),
    Layer("mnv1-28x256-256", 28, 256, 256),
    Layer("mnv1-14x512-512", 14, 512, 512),
    Layer("mnv1-7x1024-1024", 7, 1024, 1024),
    Layer("xception-19x728-728", 19, 728, 728),
)

MODES = (
    Mode("infer-b1", 1, False),
    Mode("infer-b16", 16, False),
    Mode("train-b16", 16, True),
)


def select(items, names, what):
    """The items whose name is in ``names`` (all if ``names`` is empty), in suite order."""
    if not names:
        return list(items)
    known = {item.name for item in items}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"Unknown {what} {unknown}: expected some of {sorted(known)}.")
    return [item for item in items if item.name in names]


def peak_gemm_shapes(layers, modes):
    """``(m, k, n)`` of the GEMMs the GEMM peak is the best of: 1024^3 and each run pointwise GEMM."""
    shapes = {(1024, 1024, 1024)}
    for layer in layers:
        for mode in modes:
            shapes.add((mode.batch * layer.out_size() ** 2, layer.channels, layer.outputs))
    return sorted(shapes)


def flops(layer, batch):
    """Multiply-adds counted as 2 FLOPs: depthwise, pointwise and the bias/ReLU epilogue."""
    pixels = batch * layer.out_size() ** 2
    depthwise = 2 * pixels * layer.channels * layer.kernel ** 2
    pointwise = 2 * pixels * layer.channels * layer.outputs
    return depthwise + pointwise + 2 * pixels * layer.outputs


def min_bytes(layer, batch):
    """Compulsory memory traffic of a forward pass: read the input, write the output."""
    inputs = batch * layer.size ** 2 * layer.channels
    outputs = batch * layer.out_size() ** 2 * layer.outputs
    weights = layer.channels * (layer.kernel ** 2 + layer.outputs + 1)
    return BYTES_PER_FLOAT * (inputs + outputs + weights)


def work(layer, mode):
    """``(flops, bytes)`` of one call in ``mode``.

    A training step does the forward GEMM and two backward GEMMs (input and
    weight gradients): 3x the FLOPs. Its compulsory traffic is the forward's
    plus reading the output gradient and the input again and writing the
    input gradient.
    """
    f, b = flops(layer, mode.batch), min_bytes(layer, mode.batch)
    if not mode.training:
        return f, b
    inputs = BYTES_PER_FLOAT * mode.batch * layer.size ** 2 * layer.channels
    outputs = BYTES_PER_FLOAT * mode.batch * layer.out_size() ** 2 * layer.outputs
    return 3 * f, b + outputs + 2 * inputs
