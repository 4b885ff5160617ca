"""The math of the separable layer: TF geometry, depthwise, pointwise, batch norm.

No variables live here. Weights arrive in TF's layouts (depthwise
``[kh, kw, cin, m]``, pointwise ``[1, 1, cin*m, out]``) and are converted at
the call. Both the TF1-style layer and the ``nn.Module`` call these functions.
"""
import torch
import torch.nn.functional as F


def same_padding(size, kernel, stride, dilation):
    """TF's SAME padding of one spatial dimension, as ``(before, after)``.

    The output has ``ceil(size / stride)`` elements. When the total padding is
    odd, TF puts the extra element *after* (bottom/right); PyTorch's symmetric
    ``padding=`` cannot express that, which is why ports often get it wrong.

    Example:
        >>> same_padding(224, 3, 2, 1)  # stride 2 on an even input
        (0, 1)
        >>> same_padding(7, 3, 1, 2)
        (2, 2)
    """
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def conv_geometry(spatial, kernel, stride, rate, padding):
    """Padding and output size of a TF convolution over ``spatial = (h, w)``.

    Args:
        spatial: input (height, width).
        kernel, stride, rate: (height, width) pairs.
        padding: ``'SAME'`` or ``'VALID'``.

    Returns:
        ``(pads, out)``: ``pads = ((top, bottom), (left, right))`` and
        ``out = (out_h, out_w)``.

    Raises:
        ValueError: if a rate and a stride are both above 1 (TF 1.4's rule),
            or a VALID input is smaller than the dilated kernel.
    """
    if max(rate) > 1 and max(stride) > 1:
        raise ValueError(f"rate {list(rate)} and stride {list(stride)} are both above 1: "
                         "if any rate value is larger than one, then both stride values "
                         "need to be one.")
    pads, out = [], []
    for size, k, s, d in zip(spatial, kernel, stride, rate):
        effective = (k - 1) * d + 1
        if padding == "SAME":
            pads.append(same_padding(size, k, s, d))
            out.append(-(-size // s))
        else:
            if size < effective:
                raise ValueError(f"Input spatial size {list(spatial)} is smaller than the dilated "
                                 f"kernel size {[(kk - 1) * dd + 1 for kk, dd in zip(kernel, rate)]} "
                                 "with VALID padding.")
            pads.append((0, 0))
            out.append((size - effective) // s + 1)
    return tuple(pads), tuple(out)


def output_shape(input_shape, kernel, stride, rate, padding, data_format, channels_out):
    """The full output shape of the layer for a 4-D ``input_shape``."""
    spatial = input_shape[1:3] if data_format == "NHWC" else input_shape[2:4]
    _, (out_h, out_w) = conv_geometry(spatial, kernel, stride, rate, padding)
    if data_format == "NHWC":
        return (input_shape[0], out_h, out_w, channels_out)
    return (input_shape[0], channels_out, out_h, out_w)


def depthwise_kernel(depthwise_weights):
    """TF ``[kh, kw, cin, m]`` to torch grouped-conv ``[cin*m, 1, kh, kw]``.

    TF's output channel ``c*m + j`` comes from input channel ``c``, which is
    exactly torch's grouping of ``cin*m`` filters into ``cin`` groups.
    """
    kh, kw, cin, mult = depthwise_weights.shape
    return depthwise_weights.permute(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)


def pointwise_kernel(pointwise_weights):
    """TF ``[1, 1, cin*m, out]`` to torch ``[out, cin*m, 1, 1]``."""
    return pointwise_weights.permute(3, 2, 0, 1)


def _to_nchw(x, data_format):
    # An NHWC tensor viewed as NCHW is a zero-copy channels_last tensor.
    return x.permute(0, 3, 1, 2) if data_format == "NHWC" else x


def _from_nchw(y, data_format):
    return y.permute(0, 2, 3, 1) if data_format == "NHWC" else y


def _pad_and_conv_padding(x, pads):
    """Symmetric padding goes into the conv; TF's asymmetric SAME needs an explicit pad."""
    (top, bottom), (left, right) = pads
    if top == bottom and left == right:
        return x, (top, left)
    return F.pad(x, (left, right, top, bottom)), (0, 0)


def depthwise_conv2d_nchw(x, depthwise_weights, stride, rate, pads):
    """Depthwise convolution of an NCHW(-viewed) tensor with TF-layout weights."""
    x, padding = _pad_and_conv_padding(x, pads)
    return F.conv2d(x, depthwise_kernel(depthwise_weights), None, stride, padding, rate,
                    groups=x.shape[1])


def separable_conv2d(inputs, depthwise_weights, pointwise_weights=None, biases=None, *,
                     stride=(1, 1), rate=(1, 1), padding="SAME", data_format="NHWC"):
    """Depthwise conv, then an optional pointwise conv, then an optional bias.

    Args:
        inputs: 4-D tensor in ``data_format``.
        depthwise_weights: ``[kh, kw, cin, m]``.
        pointwise_weights: ``[1, 1, cin*m, out]`` or None for depthwise only.
        biases: ``[channels_out]`` or None.
        stride, rate: (height, width) pairs; the stride applies to the
            depthwise stage only.
        padding: ``'SAME'`` or ``'VALID'``.
        data_format: ``'NHWC'`` or ``'NCHW'``.

    Returns:
        The output, in ``data_format``.

    Shape:
        SAME: ``out = ceil(in / stride)``. VALID:
        ``out = floor((in - (k - 1) * rate - 1) / stride) + 1``.
    """
    spatial = inputs.shape[1:3] if data_format == "NHWC" else inputs.shape[2:4]
    kernel = tuple(depthwise_weights.shape[:2])
    pads, _ = conv_geometry(tuple(spatial), kernel, stride, rate, padding)
    x = _to_nchw(inputs, data_format)
    y = depthwise_conv2d_nchw(x, depthwise_weights, stride, rate, pads)
    if pointwise_weights is not None:
        y = F.conv2d(y, pointwise_kernel(pointwise_weights), biases)
    elif biases is not None:
        y = y + biases.view(1, -1, 1, 1)
    return _from_nchw(y, data_format)


def batch_norm(inputs, beta, gamma, moving_mean, moving_variance, *, decay, epsilon,
               is_training, channel_axis):
    """contrib's batch norm over every axis but ``channel_axis``.

    In training the batch statistics normalise (biased variance) and the
    moving statistics are updated in place as ``moving = moving * decay +
    batch * (1 - decay)``, i.e. PyTorch's ``momentum = 1 - decay``. The moving
    variance takes the Bessel-corrected batch variance, as TF's fused kernel
    does (``n / max(n - 1, 1)``).

    Args:
        beta, gamma: ``[C]`` tensors or None (no centre / no scale).
        moving_mean, moving_variance: ``[C]`` tensors, updated in training.

    Returns:
        The normalised tensor, shaped like ``inputs``.
    """
    axis = channel_axis % inputs.dim()
    reduce_dims = [d for d in range(inputs.dim()) if d != axis]
    shape = [1] * inputs.dim()
    shape[axis] = -1
    if is_training:
        variance, mean = _batch_moments(inputs, reduce_dims, axis)
        count = inputs.numel() // max(inputs.shape[axis], 1)
        with torch.no_grad():
            bessel = count / max(count - 1, 1)
            moving_mean.mul_(decay).add_(mean.detach().to(moving_mean.dtype), alpha=1 - decay)
            moving_variance.mul_(decay).add_((variance.detach() * bessel).to(moving_variance.dtype),
                                             alpha=1 - decay)
    else:
        mean, variance = moving_mean, moving_variance
    scale = torch.rsqrt(variance + epsilon)
    if gamma is not None:
        scale = scale * gamma
    shift = -mean * scale
    if beta is not None:
        shift = shift + beta
    return inputs * scale.view(shape) + shift.view(shape)


def _batch_moments(inputs, reduce_dims, axis):
    """Biased variance and mean; NaN for an empty batch, as TF gives, without torch's warning."""
    if inputs.numel() == 0:
        nan = inputs.new_full((inputs.shape[axis],), float("nan"))
        return nan, nan
    return torch.var_mean(inputs, dim=reduce_dims, correction=0)


__all__ = ["batch_norm", "conv_geometry", "depthwise_conv2d_nchw", "depthwise_kernel",
           "output_shape", "pointwise_kernel", "same_padding", "separable_conv2d"]
