"""slim's companions of ``separable_conv2d``: the layers a slim network such as MobileNet v1 uses.

``conv2d`` (``convolution2d``), ``avg_pool2d``, ``max_pool2d``, ``dropout``,
``softmax`` and ``flatten``, each with ``tf_slim``'s signature, defaults,
variable names, scopes and collections, on the machinery of :mod:`layers`
(variable scopes, ``model_variable``, ``collect_named_outputs``, all-or-nothing
calls). The math is in :mod:`ops`.

Pooling and ``flatten`` open a TF *name* scope (no variable scope) in slim, so
they leave the variable-scope counters alone; their output alias is the
current variable scope's name plus ``scope`` or the default name made unique
in the graph (``AvgPool2D``, ``AvgPool2D_1``). Difference from TF: TF's name
scope of a re-entered variable scope is itself made unique
(``MobilenetV1_1/...``); here the variable scope's name is used.
"""
import numbers
import weakref

import numpy as np
import torch

from . import graph as graph_lib
from . import ops, utils
from .arg_scope import add_arg_scope
from .initializers import xavier_initializer, zeros_initializer
from .layers import (_biases_unless_normalized, _channels, _check_outputs_collections,
                     _check_conv_layer_options, _check_scope, _check_variables_match,
                     _normalize_activate_collect, _variable_collections,
                     collect_named_outputs, layer_weight)
from .scope import get_variable_scope, variable_scope

__all__ = ["avg_pool2d", "conv2d", "convolution2d", "dropout", "flatten", "max_pool2d", "softmax"]

_CONV_DATA_FORMATS = (None, "NHWC", "NCHW")


def _conv_data_format(data_format):
    """slim's convolution takes None for NHWC."""
    if data_format not in _CONV_DATA_FORMATS:
        raise ValueError(f"Invalid data_format {data_format!r}: expected one of "
                         f"{list(_CONV_DATA_FORMATS)}.")
    return data_format or "NHWC"


@add_arg_scope
def convolution2d(inputs, num_outputs, kernel_size, stride=1, padding="SAME", data_format=None,
                  rate=1, activation_fn=torch.relu, normalizer_fn=None, normalizer_params=None,
                  weights_initializer=xavier_initializer(), weights_regularizer=None,
                  biases_initializer=zeros_initializer(), biases_regularizer=None, reuse=None,
                  variables_collections=None, outputs_collections=None, trainable=True,
                  scope=None):
    """Adds a 2-D convolution with an optional normalizer, as slim's ``conv2d``.

    Creates ``weights`` ``[kh, kw, cin, num_outputs]``; then ``biases`` are
    added if there is no ``normalizer_fn`` and ``biases_initializer`` is not
    None, else ``normalizer_fn`` runs inside the layer scope; finally
    ``activation_fn``. SAME padding is TF's: with stride 2 on an even input
    the extra pixel is padded at the bottom/right only.

    Args:
        inputs: 4-D torch tensor or numpy array in ``data_format``.
        num_outputs: number of filters.
        kernel_size: int or ``[kernel_height, kernel_width]``.
        stride: int or pair.
        padding: ``'SAME'`` or ``'VALID'``, any case.
        data_format: None or ``'NHWC'`` (channels last), or ``'NCHW'``.
        rate: int or pair of dilation rates; if any is above 1 both strides
            must be 1.
        activation_fn: callable or None for linear.
        normalizer_fn: callable used instead of biases, e.g. ``batch_norm``.
        normalizer_params: dict of keyword arguments for ``normalizer_fn``.
        weights_initializer, weights_regularizer: for ``weights``; a None
            initializer is ``get_variable``'s default, as in TF.
        biases_initializer: initializer of ``biases``; None skips biases.
        biases_regularizer: regularizer of ``biases``.
        reuse: reuse the layer's variables; needs ``scope``.
        variables_collections: list of collection names for all variables,
            or a dict with keys ``'weights'`` and ``'biases'``.
        outputs_collections: collections (a list, or one name as a string) the
            output is added to, with the scope name appended to its ``aliases``.
        trainable: whether the variables are trainable.
        scope: variable scope name; default ``Conv`` made unique.

    Returns:
        A tensor of the input's dtype and device, in ``data_format``.

    Raises:
        ValueError: on an invalid ``data_format`` or ``padding``, a rate and a
            stride both above 1, an input smaller than the kernel with VALID
            padding, or broken reuse/shape rules of the variables.
        TypeError: if an argument has the wrong type.

    Shape:
        - Input: ``(N, H, W, C)`` (NHWC) or ``(N, C, H, W)`` (NCHW).
        - Output: ``num_outputs`` channels; SAME: ``H_out = ceil(H / stride)``;
          VALID: ``H_out = floor((H - (kh - 1) * rate - 1) / stride) + 1``.

    Example:
        >>> import sepconv as sc, torch
        >>> with sc.Graph().as_default():
        ...     y = sc.conv2d(torch.ones(1, 8, 8, 3), 4, [3, 3], stride=2)
        ...     [v.name for v in sc.global_variables()]
        ['Conv/weights:0', 'Conv/biases:0']
        >>> tuple(y.shape)
        (1, 4, 4, 4)
    """
    data_format = _conv_data_format(data_format)
    padding = utils.padding_mode(padding)
    kernel = utils.pair(kernel_size, "kernel_size")
    strides = utils.pair(stride, "stride")
    rates = utils.pair(rate, "rate")
    num_outputs = utils.positive_int(num_outputs, "num_outputs")
    _check_conv_layer_options(activation_fn, normalizer_fn, normalizer_params, weights_initializer,
                              weights_regularizer, biases_initializer, biases_regularizer,
                              variables_collections, outputs_collections, trainable, scope)
    x = utils.to_tensor(inputs)
    channels = _channels(x, data_format)
    ops.conv_geometry(ops.image_size(x, data_format), kernel, strides, rates, padding)

    with graph_lib.get_default_graph()._atomic():
        with variable_scope(scope, "Conv", reuse=reuse) as layer_scope:
            create = dict(dtype=x.dtype, trainable=trainable, device=x.device)
            # TF's Conv2D layer: a scope regularizer and the layer's own both apply.
            weights = layer_weight("weights", [kernel[0], kernel[1], channels, num_outputs],
                                   weights_initializer, weights_regularizer,
                                   _variable_collections(variables_collections, "weights"), create)
            biases = _biases_unless_normalized([num_outputs], normalizer_fn, biases_initializer,
                                               biases_regularizer, variables_collections, create,
                                               of_layer=True)
            _check_variables_match((weights, biases), x)
            outputs = ops.conv2d(x, weights, biases, stride=strides, rate=rates, padding=padding,
                                 data_format=data_format)
            return _normalize_activate_collect(outputs, normalizer_fn, normalizer_params,
                                               activation_fn, outputs_collections, layer_scope.name)


conv2d = convolution2d


# ----------------------------------------------------------------------------
# Name scopes (pooling, flatten)
# ----------------------------------------------------------------------------
_NAMES_IN_USE = weakref.WeakKeyDictionary()  # graph -> the full name scopes taken


def _name_scope(scope, default_name):
    """The name TF's ``name_scope(scope, default_name)`` opens in the current variable scope.

    As TF, the name is made unique in the graph (``name``, ``name_1``, ...);
    a failed layer call gives its name back.
    """
    graph = graph_lib.get_default_graph()
    with graph._lock:
        used = _NAMES_IN_USE.setdefault(graph, set())
        parent = get_variable_scope().name
        base = f"{parent}/{scope or default_name}" if parent else (scope or default_name)
        name, index = base, 0
        while name in used:
            index += 1
            name = f"{base}_{index}"
        used.add(name)
        graph._record_undo(lambda: used.discard(name))
    return name


def _pool2d(pool, default_name, inputs, kernel_size, stride, padding, data_format,
            outputs_collections, scope):
    """Checks the arguments, then pools in a unique name scope, all-or-nothing."""
    x, kernel, strides, padding = _check_pool_args(inputs, kernel_size, stride, padding,
                                                   data_format, outputs_collections, scope)
    with graph_lib.get_default_graph()._atomic():
        name = _name_scope(scope, default_name)
        outputs = pool(x, kernel, stride=strides, padding=padding, data_format=data_format)
        return collect_named_outputs(outputs_collections, name, outputs)


def _check_pool_args(inputs, kernel_size, stride, padding, data_format, outputs_collections, scope):
    utils.data_format(data_format)
    padding = utils.padding_mode(padding)
    kernel = utils.pair(kernel_size, "kernel_size")
    strides = utils.pair(stride, "stride")
    _check_outputs_collections(outputs_collections)
    _check_scope(scope)
    if scope is not None and not isinstance(scope, str):
        raise TypeError(f"Invalid scope {scope!r}: a pooling layer opens a name scope, which "
                        "takes a non-empty string or None.")
    x = utils.to_tensor(inputs)
    _channels(x, data_format)
    ops.conv_geometry(ops.image_size(x, data_format), kernel, strides, (1, 1), padding)
    return x, kernel, strides, padding


@add_arg_scope
def avg_pool2d(inputs, kernel_size, stride=2, padding="VALID", data_format="NHWC",
               outputs_collections=None, scope=None):
    """Adds a 2-D average pooling, as slim's ``avg_pool2d``.

    With SAME padding each window is divided by its count of real
    (non-padded) pixels, as TF's ``avg_pool``.

    Args:
        inputs: 4-D tensor or array in ``data_format``.
        kernel_size: int or ``[kernel_height, kernel_width]``.
        stride: int or pair; slim's default is 2.
        padding: ``'VALID'`` (default) or ``'SAME'``, any case.
        data_format: ``'NHWC'`` or ``'NCHW'``.
        outputs_collections: collections the output is added to (a list, or one name).
        scope: name scope; default ``AvgPool2D``, made unique.

    Returns:
        The pooled tensor, in ``data_format``.

    Raises:
        ValueError: on an invalid ``data_format`` or ``padding``, or a VALID
            input smaller than the kernel.
        TypeError: if an argument has the wrong type.

    Shape:
        SAME: ``H_out = ceil(H / stride)``; VALID:
        ``H_out = floor((H - kh) / stride) + 1``; channels unchanged.

    Example:
        >>> import sepconv as sc, torch
        >>> x = torch.arange(9.0).view(1, 3, 3, 1)
        >>> sc.avg_pool2d(x, [2, 2], padding="SAME")[0, :, :, 0].tolist()
        [[2.0, 3.5], [6.5, 8.0]]
    """
    return _pool2d(ops.avg_pool2d, "AvgPool2D", inputs, kernel_size, stride, padding, data_format,
                   outputs_collections, scope)


@add_arg_scope
def max_pool2d(inputs, kernel_size, stride=2, padding="VALID", data_format="NHWC",
               outputs_collections=None, scope=None):
    """Adds a 2-D max pooling, as slim's ``max_pool2d``.

    Args:
        inputs: 4-D tensor or array in ``data_format``.
        kernel_size: int or ``[kernel_height, kernel_width]``.
        stride: int or pair; slim's default is 2.
        padding: ``'VALID'`` (default) or ``'SAME'`` (pads with -inf).
        data_format: ``'NHWC'`` or ``'NCHW'``.
        outputs_collections: collections the output is added to (a list, or one name).
        scope: name scope; default ``MaxPool2D``, made unique.

    Returns:
        The pooled tensor, in ``data_format``.

    Raises:
        ValueError: on an invalid ``data_format`` or ``padding``, or a VALID
            input smaller than the kernel.
        TypeError: if an argument has the wrong type.

    Shape:
        As :func:`avg_pool2d`.

    Example:
        >>> import sepconv as sc, torch
        >>> x = torch.arange(16.0).view(1, 4, 4, 1)
        >>> sc.max_pool2d(x, [2, 2])[0, :, :, 0].tolist()
        [[5.0, 7.0], [13.0, 15.0]]
    """
    return _pool2d(ops.max_pool2d, "MaxPool2D", inputs, kernel_size, stride, padding, data_format,
                   outputs_collections, scope)


# ----------------------------------------------------------------------------
# Dropout, softmax, flatten: any rank
# ----------------------------------------------------------------------------
def _check_keep_prob(keep_prob):
    if isinstance(keep_prob, torch.Tensor) and keep_prob.numel() == 1:
        keep_prob = keep_prob.item()
    if isinstance(keep_prob, bool) or not isinstance(keep_prob, numbers.Real):
        raise TypeError(f"Invalid keep_prob {keep_prob!r}: expected a float in (0, 1].")
    if not 0.0 < keep_prob <= 1.0:
        raise ValueError(f"Invalid keep_prob {keep_prob!r}: expected a float in (0, 1].")
    return float(keep_prob)


def _noise_shape(noise_shape, shape):
    """The mask's shape: ``noise_shape`` with None entries taken from ``shape``, broadcastable."""
    if noise_shape is None:
        return tuple(shape)
    if isinstance(noise_shape, torch.Size):
        noise_shape = tuple(noise_shape)
    allowed = f"a list of {len(shape)} ints (or None), each 1 or the input's dimension {list(shape)}"
    if not isinstance(noise_shape, (list, tuple)) or len(noise_shape) != len(shape):
        raise ValueError(f"Invalid noise_shape {noise_shape!r}: expected {allowed}.")
    result = []
    for dim, size in zip(noise_shape, shape):
        if dim is None:
            dim = size
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim not in (1, size):
            raise ValueError(f"Invalid noise_shape {list(noise_shape)!r}: expected {allowed}.")
        result.append(int(dim))
    return tuple(result)


@add_arg_scope
def dropout(inputs, keep_prob=0.5, noise_shape=None, is_training=True, outputs_collections=None,
            scope=None, seed=None):
    """Keeps each element with probability ``keep_prob`` scaled by ``1 / keep_prob``, as slim.

    The keep mask is ``uniform[0, 1) >= 1 - keep_prob``, drawn from torch's
    global RNG (``torch.manual_seed`` makes it repeatable), or from a
    generator seeded with ``seed`` when given (then every call draws the
    same mask). Not training, or ``keep_prob == 1``, gives the input's
    values unchanged (a new tensor object, as TF's identity).

    Args:
        inputs: floating-point tensor or array of any rank, a scalar too.
        keep_prob: probability in ``(0, 1]`` that an element is kept.
        noise_shape: shape of the random mask, broadcast over ``inputs``
            (entries 1 or the input's size; None for the input's size).
        is_training: bool, numpy bool, 1 or 0, or a scalar bool tensor; when
            False, no dropout.
        outputs_collections: collections the output is added to (a list, or one name).
        scope: variable scope; default ``Dropout``, made unique.
        seed: int or None; see above.

    Returns:
        A tensor shaped like ``inputs``.

    Raises:
        ValueError: ``keep_prob`` outside ``(0, 1]`` or a bad ``noise_shape``.
        TypeError: if an argument has the wrong type.

    Shape:
        Output shape equals input shape.

    Example:
        >>> import sepconv as sc, torch
        >>> y = sc.dropout(torch.ones(2, 1000), keep_prob=0.5, seed=0)
        >>> sorted(set(y.flatten().tolist()))
        [0.0, 2.0]
        >>> sc.dropout(torch.ones(3), is_training=False).tolist()
        [1.0, 1.0, 1.0]
    """
    keep_prob = _check_keep_prob(keep_prob)
    training = utils.check_training(is_training)
    _check_outputs_collections(outputs_collections)
    _check_scope(scope)
    seed = utils.check_seed(seed)
    x = utils.to_tensor(inputs, "inputs", min_rank=0, max_rank=None)
    mask_shape = _noise_shape(noise_shape, x.shape)
    with graph_lib.get_default_graph()._atomic():
        with variable_scope(scope, "Dropout") as layer_scope:
            if not training or keep_prob == 1.0:
                outputs = x.view(x.shape)
            else:
                generator = None
                if seed is not None:
                    generator = torch.Generator(device=x.device).manual_seed(seed)
                noise = torch.rand(mask_shape, generator=generator, dtype=x.dtype, device=x.device)
                keep = (noise >= 1.0 - keep_prob).to(x.dtype)
                outputs = x * (1.0 / keep_prob) * keep
            return collect_named_outputs(outputs_collections, layer_scope.name, outputs)


@add_arg_scope
def softmax(logits, scope=None):
    """Softmax over the last dimension of an N-D tensor (N >= 2), as slim's ``softmax``.

    Opens a variable scope (default ``softmax``, lower case as slim's) and
    adds no collections.

    Args:
        logits: floating-point tensor or array of rank >= 2.
        scope: variable scope; default ``softmax``, made unique.

    Returns:
        A tensor shaped like ``logits`` whose last dimension sums to 1.

    Raises:
        ValueError: if ``logits`` has rank < 2 (an empty dimension is fine,
            as TF: the result is empty too).
        TypeError: if an argument has the wrong type.

    Example:
        >>> import sepconv as sc, torch
        >>> sc.softmax(torch.zeros(1, 1, 4)).tolist()
        [[[0.25, 0.25, 0.25, 0.25]]]
    """
    _check_scope(scope)
    x = utils.to_tensor(logits, "logits", min_rank=2, max_rank=None)
    with graph_lib.get_default_graph()._atomic():
        with variable_scope(scope, "softmax"):
            return torch.softmax(x, dim=-1)


@add_arg_scope
def flatten(inputs, outputs_collections=None, scope=None):
    """Flattens all but the first (batch) dimension, as slim's ``flatten``.

    Args:
        inputs: tensor or array of rank >= 1, ``[batch_size, ...]``, of any
            dtype (integers and bools too: it is a reshape).
        outputs_collections: collections the output is added to (a list, or one name).
        scope: name scope; default ``Flatten``, made unique.

    Returns:
        A tensor ``[batch_size, k]`` with ``k`` the product of the other sizes
        (1 for a rank-1 input, as TF).

    Raises:
        ValueError: if ``inputs`` is a scalar (rank 0).
        TypeError: if an argument has the wrong type.

    Example:
        >>> import sepconv as sc, torch
        >>> tuple(sc.flatten(torch.ones(2, 3, 4, 5)).shape)
        (2, 60)
    """
    _check_outputs_collections(outputs_collections)
    _check_scope(scope)
    x = utils.to_tensor(inputs, "inputs", min_rank=1, max_rank=None, floating=False)
    graph = graph_lib.get_default_graph()
    with graph._atomic():
        name = _name_scope(scope, "Flatten")
        # An explicit size: ``-1`` cannot be inferred for an empty batch.
        outputs = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))  # a new tensor object
        return collect_named_outputs(outputs_collections, name, outputs)
