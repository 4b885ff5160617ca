"""An independent float64 reference of the separable layer, for the tests.

Written from TF's documented semantics with explicit slicing and einsum over a
zero-padded NHWC input. It deliberately calls neither ``sepconv._src.ops`` nor
``torch.nn.functional.conv2d``, so a shared bug cannot hide. Torch tensors are
used only so that autograd can differentiate the reference too.
"""
import torch


def tf_same_pads(size, kernel, stride, rate):
    """TF's SAME padding ``(before, after)``, written out from TF's docs."""
    effective = (kernel - 1) * rate + 1
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + effective - size, 0)
    before = total // 2  # TF puts the odd element after (bottom/right)
    return before, total - before


def to_nhwc(x, data_format):
    return x if data_format == "NHWC" else x.permute(0, 2, 3, 1)


def from_nhwc(y, data_format):
    return y if data_format == "NHWC" else y.permute(0, 3, 1, 2)


def depthwise_nhwc(x, depthwise, stride, rate, padding):
    """Depthwise conv of an NHWC tensor with TF weights ``[kh, kw, cin, m]``."""
    n, h, w, cin = x.shape
    kh, kw, _, mult = depthwise.shape
    if padding == "SAME":
        top, bottom = tf_same_pads(h, kh, stride[0], rate[0])
        left, right = tf_same_pads(w, kw, stride[1], rate[1])
    else:
        top = bottom = left = right = 0
    padded = x.new_zeros(n, h + top + bottom, w + left + right, cin)
    padded[:, top:top + h, left:left + w, :] = x
    out_h = (padded.shape[1] - (kh - 1) * rate[0] - 1) // stride[0] + 1
    out_w = (padded.shape[2] - (kw - 1) * rate[1] - 1) // stride[1] + 1
    out = x.new_zeros(n, out_h, out_w, cin, mult)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * rate[0], i * rate[0] + (out_h - 1) * stride[0] + 1, stride[0])
            cols = slice(j * rate[1], j * rate[1] + (out_w - 1) * stride[1] + 1, stride[1])
            patch = padded[:, rows, cols, :]
            out = out + torch.einsum("nhwc,cm->nhwcm", patch, depthwise[i, j])
    # TF's output channel c*m + j comes from input channel c.
    return out.reshape(n, out_h, out_w, cin * mult)


def separable_conv2d(x, depthwise, pointwise=None, biases=None, *, stride=(1, 1), rate=(1, 1),
                     padding="SAME", data_format="NHWC"):
    """Depthwise, then optional pointwise ``[1, 1, cin*m, out]``, then optional bias."""
    y = depthwise_nhwc(to_nhwc(x, data_format), depthwise, stride, rate, padding)
    if pointwise is not None:
        y = torch.einsum("nhwc,co->nhwo", y, pointwise[0, 0])
    if biases is not None:
        y = y + biases
    return from_nhwc(y, data_format)


def batch_norm_inference(y, mean, variance, beta, gamma, epsilon, data_format="NHWC"):
    """``(y - mean) / sqrt(variance + epsilon) * gamma + beta`` on the channel axis."""
    y = to_nhwc(y, data_format)
    out = (y - mean) / torch.sqrt(variance + epsilon)
    if gamma is not None:
        out = out * gamma
    if beta is not None:
        out = out + beta
    return from_nhwc(out, data_format)
