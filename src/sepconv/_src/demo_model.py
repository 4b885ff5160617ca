"""The demo's network: a small MobileNet built the TF1/slim way.

``mobilenet_digits`` is written as a TF1 model function: layers from
``sc.separable_conv2d`` under an ``sc.arg_scope`` that sets batch norm as the
normalizer and an L2 weight regularizer, and ``is_training`` as an argument.
:func:`build_model` wraps it in ``sc.make_template`` so the training call site
and the evaluation call site share one set of variables.
"""
import functools

import torch
import torch.nn.functional as F

import sepconv as sc

from . import demo_dist

# (scope, pointwise outputs, depth multiplier, stride) of each block; 8x8 -> 4x4 -> 2x2.
BLOCKS = (("conv0", 32, 8, 1), ("conv1", 64, 1, 2), ("conv2", 64, 1, 1),
          ("conv3", 128, 1, 2), ("conv4", 128, 1, 1))
BN_DECAY = 0.9  # short runs: 0.999 would leave the moving statistics far from the data
BN_EPSILON = 1e-3


def mobilenet_digits(images, is_training, num_classes=10, weight_decay=1e-4,
                     normalizer_fn=sc.batch_norm):
    """Logits ``[N, num_classes]`` of NHWC ``images`` ``[N, 8, 8, 1]``.

    Args:
        images: float tensor ``[N, H, W, 1]``.
        is_training: whether batch norm uses batch statistics (and updates
            its moving statistics) or the moving statistics.
        num_classes: outputs of the final 1x1 layer.
        weight_decay: scale of the L2 regularizer on every weight.
        normalizer_fn: ``sc.batch_norm`` or a drop-in with its signature,
            e.g. :func:`cross_replica_batch_norm` for data-parallel runs.
    """
    bn_params = dict(is_training=is_training, decay=BN_DECAY, epsilon=BN_EPSILON, scale=True)
    with sc.arg_scope([sc.separable_conv2d], activation_fn=F.relu6, normalizer_fn=normalizer_fn,
                      normalizer_params=bn_params,
                      weights_initializer=sc.variance_scaling_initializer(),
                      weights_regularizer=sc.l2_regularizer(weight_decay)):
        net = images
        for scope, outputs, multiplier, stride in BLOCKS:
            net = sc.separable_conv2d(net, outputs, [3, 3], multiplier, stride=stride, scope=scope)
        net = net.mean(dim=(1, 2), keepdim=True)  # global average pool, as MobileNet
        logits = sc.separable_conv2d(net, num_classes, [1, 1], 1, activation_fn=None,
                                     normalizer_fn=None, scope="logits")
    return logits.reshape(-1, num_classes)


def build_model(weight_decay, distributed):
    """A template of :func:`mobilenet_digits`; call it as ``model(images, is_training=...)``.

    With ``distributed`` the batch norm uses the statistics of the global
    batch across ranks (see :func:`cross_replica_batch_norm`), so the
    network computes the same function as one process on the whole batch.
    """
    normalizer = cross_replica_batch_norm if distributed else sc.batch_norm
    return sc.make_template("mobilenet_digits", mobilenet_digits, weight_decay=weight_decay,
                            normalizer_fn=normalizer)


def cross_replica_batch_norm(inputs, is_training=True, decay=0.999, epsilon=0.001, **params):
    """``sc.batch_norm`` whose training statistics come from every rank's shard.

    In training, the per-channel mean and variance are all-reduced across the
    ranks (differentiably, so gradients flow through them as they do through
    one process's batch statistics). A custom getter, TF1's idiom for
    substituting variables, hands these global statistics to ``sc.batch_norm``
    in place of its moving statistics and runs it in inference form, which is
    then exactly training-mode batch norm on the global batch; the getter also
    updates the moving statistics as ``sc.batch_norm`` would, so they stay
    identical on every rank. Variables, names and collections are
    ``sc.batch_norm``'s own. NHWC only.
    """
    if not is_training:
        return sc.batch_norm(inputs, is_training=False, decay=decay, epsilon=epsilon, **params)
    mean, variance, count = demo_dist.global_moments(inputs, reduce_dims=(0, 1, 2))  # NHWC
    getter = functools.partial(_batch_moments_getter, moments=(mean, variance, count), decay=decay)
    # Re-entering the current (layer) scope adds the getter without a new name level.
    with sc.variable_scope(sc.get_variable_scope(), custom_getter=getter):
        return sc.batch_norm(inputs, is_training=False, decay=decay, epsilon=epsilon, **params)


def _batch_moments_getter(getter, name, *args, moments, decay, **kwargs):
    variable = getter(name, *args, **kwargs)
    mean, variance, count = moments
    if name.endswith("/moving_mean"):
        _update_moving(variable, mean, decay)
        return mean
    if name.endswith("/moving_variance"):
        # The moving variance takes the unbiased estimate, as sc.batch_norm's.
        _update_moving(variable, variance * (count / max(count - 1, 1)), decay)
        return variance
    return variable


def _update_moving(variable, value, decay):
    with torch.no_grad():
        variable.mul_(decay).add_(value.detach().to(variable.dtype), alpha=1 - decay)

