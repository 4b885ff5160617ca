"""MobileNet v1 exactly as slim's ``nets/mobilenet_v1.py`` defines it, on sepconv's layers.

Same layers, variable names (``MobilenetV1/Conv2d_1_depthwise/depthwise_weights``,
``MobilenetV1/Conv2d_1_pointwise/BatchNorm/moving_mean``, ...), end points and
arg scope, so a checkpoint of slim's network restores into this one. NHWC.

Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications", https://arxiv.org/abs/1704.04861.
"""
import collections
import functools
import numbers

import torch.nn.functional as F

from .. import graph as graph_lib
from .. import regularizers, utils
from ..arg_scope import arg_scope
from ..graph import GraphKeys
from ..initializers import truncated_normal_initializer
from ..layers import batch_norm, separable_conv2d
from ..scope import variable_scope
from ..slim_layers import avg_pool2d, conv2d, dropout, softmax

__all__ = ["Conv", "DepthSepConv", "MOBILENETV1_CONV_DEFS", "mobilenet_v1",
           "mobilenet_v1_025", "mobilenet_v1_050", "mobilenet_v1_075",
           "mobilenet_v1_arg_scope", "mobilenet_v1_base"]

# A 3x3 (or ``kernel``) convolution, and a depthwise convolution followed by a 1x1 one.
Conv = collections.namedtuple("Conv", ["kernel", "stride", "depth"])
DepthSepConv = collections.namedtuple("DepthSepConv", ["kernel", "stride", "depth"])

# The MobileNet v1 body.
MOBILENETV1_CONV_DEFS = [
    Conv(kernel=[3, 3], stride=2, depth=32),
    DepthSepConv(kernel=[3, 3], stride=1, depth=64),
    DepthSepConv(kernel=[3, 3], stride=2, depth=128),
    DepthSepConv(kernel=[3, 3], stride=1, depth=128),
    DepthSepConv(kernel=[3, 3], stride=2, depth=256),
    DepthSepConv(kernel=[3, 3], stride=1, depth=256),
    DepthSepConv(kernel=[3, 3], stride=2, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=1, depth=512),
    DepthSepConv(kernel=[3, 3], stride=2, depth=1024),
    DepthSepConv(kernel=[3, 3], stride=1, depth=1024),
]

_OUTPUT_STRIDES = (8, 16, 32)


def _fixed_padding(inputs, kernel_size, rate=1):
    """Pads NHWC ``inputs`` so a VALID convolution gives SAME's output size.

    Unlike TF's SAME, the padding does not depend on the input size or the
    stride: ``(k_eff - 1) // 2`` before and the rest after. As slim, the
    effective kernel of both dimensions comes from ``kernel_size[0]``.
    """
    effective = kernel_size[0] + (kernel_size[0] - 1) * (rate - 1)
    before = (effective - 1) // 2
    after = effective - 1 - before
    return F.pad(inputs, (0, 0, before, after, before, after))


def _check_base_args(depth_multiplier, output_stride, min_depth):
    if isinstance(depth_multiplier, bool) or not isinstance(depth_multiplier, numbers.Real):
        raise TypeError(f"Invalid depth_multiplier {depth_multiplier!r}: expected a number > 0.")
    if depth_multiplier <= 0:
        raise ValueError(f"Invalid depth_multiplier {depth_multiplier!r}: depth_multiplier is "
                         "not greater than zero.")
    if output_stride is not None and output_stride not in _OUTPUT_STRIDES:
        raise ValueError(f"Invalid output_stride {output_stride!r}: only allowed output_stride "
                         f"values are {list(_OUTPUT_STRIDES)} (or None).")
    utils.positive_int(min_depth, "min_depth")


def _check_conv_defs(conv_defs, final_endpoint):
    """Every definition and the end point are checked before any layer is built."""
    end_points = []
    for i, conv_def in enumerate(conv_defs):
        if isinstance(conv_def, Conv):
            end_points.append(f"Conv2d_{i}")
        elif isinstance(conv_def, DepthSepConv):
            end_points += [f"Conv2d_{i}_depthwise", f"Conv2d_{i}_pointwise"]
        else:
            raise ValueError(f"Invalid conv_defs[{i}] {conv_def!r}: expected a Conv or a "
                             "DepthSepConv.")
    if final_endpoint not in end_points:
        raise ValueError(f"Unknown final endpoint {final_endpoint!r}: expected one of "
                         f"{end_points}.")


def mobilenet_v1_base(inputs, final_endpoint="Conv2d_13_pointwise", min_depth=8,
                      depth_multiplier=1.0, conv_defs=None, output_stride=None,
                      use_explicit_padding=False, scope=None):
    """MobileNet v1 from ``inputs`` up to ``final_endpoint``, as slim's.

    Layer ``i`` of ``conv_defs`` is ``Conv2d_<i>`` (a :class:`Conv`) or
    ``Conv2d_<i>_depthwise`` (``separable_conv2d`` with ``num_outputs=None``,
    ``depth_multiplier=1``) then ``Conv2d_<i>_pointwise`` (1x1 ``conv2d``)
    (a :class:`DepthSepConv`). Activation and normalizer come from the
    enclosing arg scope (see :func:`mobilenet_v1_arg_scope`).

    Args:
        inputs: ``[batch, height, width, channels]`` tensor.
        final_endpoint: the end point to stop at: ``'Conv2d_0'``, or
            ``'Conv2d_<i>_depthwise'``/``'Conv2d_<i>_pointwise'`` for
            ``i`` in 1..13 with the default ``conv_defs``.
        min_depth: minimum number of channels of every layer.
        depth_multiplier: width multiplier, > 0: a layer of depth ``d`` gets
            ``max(int(d * depth_multiplier), min_depth)`` channels.
        conv_defs: list of :class:`Conv` / :class:`DepthSepConv`; default
            :data:`MOBILENETV1_CONV_DEFS`.
        output_stride: None, 8, 16 or 32: once the activations reach this
            stride, later layers use stride 1 and atrous (dilated) depthwise
            convolutions instead.
        use_explicit_padding: pad inputs explicitly (see ``_fixed_padding``)
            and convolve with VALID instead of SAME.
        scope: variable scope (name or :class:`VariableScope`); default
            ``MobilenetV1``.

    Returns:
        ``(net, end_points)``: the ``final_endpoint`` activation and a dict
        from end-point names to activations.

    Raises:
        ValueError: an unknown ``final_endpoint`` or conv def, a
            ``depth_multiplier`` <= 0 or an ``output_stride`` not allowed.
        TypeError: if an argument has the wrong type.

    Shape:
        ``(N, H, W, C)`` to ``(N, H/s, W/s, depth)`` with ``s`` the product
        of the strides so far (rounded up, for SAME padding).

    Example:
        >>> import sepconv as sc, torch
        >>> from sepconv.models import mobilenet_v1_base
        >>> with sc.Graph().as_default():
        ...     net, ends = mobilenet_v1_base(torch.ones(1, 32, 32, 3), "Conv2d_2_pointwise",
        ...                                   depth_multiplier=0.25)
        >>> tuple(net.shape), list(ends)
        ((1, 8, 8, 32), ['Conv2d_0', 'Conv2d_1_depthwise', 'Conv2d_1_pointwise', 'Conv2d_2_depthwise', 'Conv2d_2_pointwise'])
    """
    _check_base_args(depth_multiplier, output_stride, min_depth)
    utils.check_bool(use_explicit_padding, "use_explicit_padding")
    conv_defs = MOBILENETV1_CONV_DEFS if conv_defs is None else conv_defs
    _check_conv_defs(conv_defs, final_endpoint)

    def depth(d):
        return max(int(d * depth_multiplier), min_depth)

    end_points = {}
    padding = "VALID" if use_explicit_padding else "SAME"
    with graph_lib.get_default_graph()._atomic(), variable_scope(scope, "MobilenetV1"):
        with arg_scope([conv2d, separable_conv2d], padding=padding):
            # The running product of strides; past output_stride, strides become atrous rates.
            current_stride, rate = 1, 1
            net = inputs
            for i, conv_def in enumerate(conv_defs):
                end_point_base = f"Conv2d_{i}"
                if output_stride is not None and current_stride == output_stride:
                    layer_stride, layer_rate = 1, rate
                    rate *= conv_def.stride
                else:
                    layer_stride, layer_rate = conv_def.stride, 1
                    current_stride *= conv_def.stride
                if isinstance(conv_def, Conv):
                    if use_explicit_padding:
                        net = _fixed_padding(net, conv_def.kernel)
                    # As slim, the first convolution keeps its stride whatever output_stride says.
                    net = conv2d(net, depth(conv_def.depth), conv_def.kernel,
                                 stride=conv_def.stride, scope=end_point_base)
                    end_points[end_point_base] = net
                    if end_point_base == final_endpoint:
                        return net, end_points
                else:  # a DepthSepConv (checked up front)
                    end_point = end_point_base + "_depthwise"
                    if use_explicit_padding:
                        net = _fixed_padding(net, conv_def.kernel, layer_rate)
                    net = separable_conv2d(net, None, conv_def.kernel, depth_multiplier=1,
                                           stride=layer_stride, rate=layer_rate, scope=end_point)
                    end_points[end_point] = net
                    if end_point == final_endpoint:
                        return net, end_points
                    end_point = end_point_base + "_pointwise"
                    net = conv2d(net, depth(conv_def.depth), [1, 1], stride=1, scope=end_point)
                    end_points[end_point] = net
                    if end_point == final_endpoint:
                        return net, end_points


def _reduced_kernel_size_for_small_input(input_tensor, kernel_size):
    """``kernel_size`` reduced to the input's height and width where those are smaller."""
    shape = list(input_tensor.shape)
    return [min(shape[1], kernel_size[0]), min(shape[2], kernel_size[1])]


def _spatial_squeeze(logits):
    """``tf.squeeze(logits, [1, 2])``: refuses dimensions that are not 1, as TF does."""
    if logits.shape[1] != 1 or logits.shape[2] != 1:
        raise ValueError(f"Can not squeeze logits of shape {list(logits.shape)}: dimensions 1 "
                         "and 2 must be 1 (use global_pool=True or spatial_squeeze=False for "
                         "inputs larger than the network's default size).")
    return logits.squeeze(2).squeeze(1)


def _check_input_rank(inputs):
    rank = getattr(inputs, "ndim", None)
    if rank is not None and rank != 4:
        raise ValueError(f"Invalid input tensor rank, expected 4, was: {rank} (shape "
                         f"{list(inputs.shape)}).")


def mobilenet_v1(inputs, num_classes=1000, dropout_keep_prob=0.999, is_training=True,
                 min_depth=8, depth_multiplier=1.0, conv_defs=None, prediction_fn=softmax,
                 spatial_squeeze=True, reuse=None, scope="MobilenetV1", global_pool=False):
    """MobileNet v1 for classification, as slim's ``mobilenet_v1``.

    The base, then under ``Logits``: average pooling ``AvgPool_1a`` (a 7x7
    window, reduced for small inputs; or a global mean with
    ``global_pool``), ``Dropout_1b``, the 1x1 ``Conv2d_1c_1x1`` with biases
    and no activation or normalizer, and the spatial squeeze. Use it under
    :func:`mobilenet_v1_arg_scope`.

    Args:
        inputs: ``[batch, height, width, channels]`` tensor.
        num_classes: number of classes; 0 or None omits the logits layer and
            returns the pooled features.
        dropout_keep_prob: ``keep_prob`` of the dropout before the logits.
        is_training: for batch norm and dropout (overrides the arg scope's).
        min_depth, depth_multiplier, conv_defs: see :func:`mobilenet_v1_base`.
        prediction_fn: ``fn(logits, scope=...)`` for ``end_points['Predictions']``,
            or None.
        spatial_squeeze: logits ``[B, C]`` instead of ``[B, 1, 1, C]``.
        reuse: reuse the network's variables (needs ``scope``).
        scope: variable scope; default ``MobilenetV1``.
        global_pool: pool any input size down to 1x1.

    Returns:
        ``(logits, end_points)``: the logits (or the pooled features when
        ``num_classes`` is 0/None) and a dict of activations keyed
        ``Conv2d_0`` ... ``Conv2d_13_pointwise``, ``AvgPool_1a`` (or
        ``global_pool``), ``Logits``, ``Predictions``.

    Raises:
        ValueError: the input rank is not 4, a squeezed dimension is not 1,
            or an argument is invalid (see :func:`mobilenet_v1_base`).

    Shape:
        ``(N, H, W, C)`` to ``(N, num_classes)``.

    Example:
        >>> import sepconv as sc, torch
        >>> from sepconv.models import mobilenet_v1, mobilenet_v1_arg_scope
        >>> with sc.Graph().as_default():
        ...     with sc.arg_scope(mobilenet_v1_arg_scope(is_training=False)):
        ...         logits, ends = mobilenet_v1(torch.zeros(2, 64, 64, 3), num_classes=10,
        ...                                     depth_multiplier=0.25, is_training=False)
        ...     n_vars = len(sc.global_variables())
        >>> tuple(logits.shape), n_vars, list(ends)[-3:]
        ((2, 10), 137, ['AvgPool_1a', 'Logits', 'Predictions'])
    """
    _check_input_rank(inputs)
    utils.check_callable(prediction_fn, "prediction_fn")
    # All-or-nothing, as each layer: a failed call leaves no half-built network behind.
    with graph_lib.get_default_graph()._atomic(), \
            variable_scope(scope, "MobilenetV1", reuse=reuse) as net_scope:
        with arg_scope([batch_norm, dropout], is_training=is_training):
            net, end_points = mobilenet_v1_base(inputs, scope=net_scope, min_depth=min_depth,
                                                depth_multiplier=depth_multiplier,
                                                conv_defs=conv_defs)
            with variable_scope("Logits"):
                if global_pool:
                    net = net.mean(dim=(1, 2), keepdim=True)
                    end_points["global_pool"] = net
                else:
                    kernel_size = _reduced_kernel_size_for_small_input(net, [7, 7])
                    net = avg_pool2d(net, kernel_size, padding="VALID", scope="AvgPool_1a")
                    end_points["AvgPool_1a"] = net
                if not num_classes:
                    return net, end_points
                net = dropout(net, keep_prob=dropout_keep_prob, scope="Dropout_1b")
                logits = conv2d(net, num_classes, [1, 1], activation_fn=None, normalizer_fn=None,
                                scope="Conv2d_1c_1x1")
                if spatial_squeeze:
                    logits = _spatial_squeeze(logits)
            end_points["Logits"] = logits
            if prediction_fn:
                end_points["Predictions"] = prediction_fn(logits, scope="Predictions")
    return logits, end_points


mobilenet_v1.default_image_size = 224


def _wrapped_partial(func, **kwargs):
    partial = functools.partial(func, **kwargs)
    functools.update_wrapper(partial, func)
    del partial.__wrapped__  # so that inspect.signature shows the bound depth_multiplier
    return partial


mobilenet_v1_075 = _wrapped_partial(mobilenet_v1, depth_multiplier=0.75)
mobilenet_v1_050 = _wrapped_partial(mobilenet_v1, depth_multiplier=0.50)
mobilenet_v1_025 = _wrapped_partial(mobilenet_v1, depth_multiplier=0.25)


def mobilenet_v1_arg_scope(is_training=True, weight_decay=0.00004, stddev=0.09,
                           regularize_depthwise=False, batch_norm_decay=0.9997,
                           batch_norm_epsilon=0.001,
                           batch_norm_updates_collections=GraphKeys.UPDATE_OPS,
                           normalizer_fn=batch_norm):
    """slim's default MobileNet v1 arg scope.

    ``conv2d`` and ``separable_conv2d`` get a truncated-normal initializer,
    ``relu6`` and ``normalizer_fn``; ``batch_norm`` centres and scales;
    ``conv2d``'s weights get an L2 regularizer (``separable_conv2d``'s only
    with ``regularize_depthwise``).

    Args:
        is_training: for batch norm; None leaves it out of the scope.
        weight_decay: scale of the L2 regularizer.
        stddev: standard deviation of the truncated-normal initializer.
        regularize_depthwise: also regularize the depthwise weights.
        batch_norm_decay, batch_norm_epsilon: batch norm's ``decay`` and ``epsilon``.
        batch_norm_updates_collections: batch norm's ``updates_collections``.
        normalizer_fn: the normalizer after each convolution.

    Returns:
        An arg scope dict, to enter with ``sc.arg_scope(...)``.

    Example:
        >>> import sepconv as sc
        >>> from sepconv.models import mobilenet_v1_arg_scope
        >>> scope = mobilenet_v1_arg_scope(is_training=False)
        >>> scope[sc.arg_scope_func_key(sc.batch_norm)]["scale"]
        True
    """
    batch_norm_params = {
        "center": True,
        "scale": True,
        "decay": batch_norm_decay,
        "epsilon": batch_norm_epsilon,
        "updates_collections": batch_norm_updates_collections,
    }
    if is_training is not None:
        batch_norm_params["is_training"] = is_training
    weights_init = truncated_normal_initializer(stddev=stddev)
    regularizer = regularizers.l2_regularizer(weight_decay)
    depthwise_regularizer = regularizer if regularize_depthwise else None
    with arg_scope([conv2d, separable_conv2d], weights_initializer=weights_init,
                   activation_fn=F.relu6, normalizer_fn=normalizer_fn):
        with arg_scope([batch_norm], **batch_norm_params):
            with arg_scope([conv2d], weights_regularizer=regularizer):
                with arg_scope([separable_conv2d], weights_regularizer=depthwise_regularizer) as sc:
                    return sc
