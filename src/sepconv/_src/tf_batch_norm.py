"""Batch norm as TF's layer runs it, shared by :func:`sepconv.batch_norm` and ``sc.nn.BatchNorm``.

Around :func:`sepconv._src.ops.batch_norm`: the smallest epsilon TF's fused
kernel takes, and float32 math for variables that a module conversion
(``.half()``, ``.bfloat16()``) stored in half precision.
"""
import torch

from . import ops

# TF 1.4's nn.fused_batch_norm raised a smaller epsilon to this, cuDNN's minimum, on every
# device (TF 2 no longer does: an epsilon below it gives other numbers than TF 2.21).
FUSED_MIN_EPSILON = 1.001e-5


# The names of batch norm's tensors (the keys of param_initializers and the like).
PARAMS = ("beta", "gamma", "moving_mean", "moving_variance")


def kernel_epsilon(epsilon, dtype, fused):
    """The epsilon TF adds to the variance: at least ``FUSED_MIN_EPSILON`` where its fused kernel runs."""
    if ops.runs_fused_kernel(dtype, fused):
        return max(epsilon, FUSED_MIN_EPSILON)
    return epsilon


def batch_norm(inputs, beta, gamma, moving_mean, moving_variance, *, decay, epsilon, is_training,
               channel_axis, fused):
    """:func:`ops.batch_norm` with TF's kernel epsilon, in float32 for half-precision variables.

    TF keeps batch norm's variables in float32 for half inputs. Variables
    converted to float16 or bfloat16 are widened for the computation, and
    the updated moving statistics are rounded back once, so the numbers are
    TF's up to the storage precision.
    """
    epsilon = kernel_epsilon(epsilon, inputs.dtype, fused)
    beta, gamma = _widened(beta), _widened(gamma)
    mean, variance = _widened(moving_mean), _widened(moving_variance)
    outputs = ops.batch_norm(inputs, beta, gamma, mean, variance, decay=decay, epsilon=epsilon,
                             is_training=is_training, channel_axis=channel_axis, fused=fused)
    if is_training:
        with torch.no_grad():
            for stored, updated in ((moving_mean, mean), (moving_variance, variance)):
                if updated is not stored:
                    stored.copy_(updated)
    return outputs


def _widened(tensor):
    """``tensor`` in float32 if it is stored in half precision (differentiably), else itself."""
    if tensor is None or ops.batch_norm_dtype(tensor.dtype) == tensor.dtype:
        return tensor
    return tensor.float()
