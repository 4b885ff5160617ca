"""The TF1/slim layers: variables from :mod:`scope`, math from :mod:`ops`.

Each layer call is all-or-nothing: if it raises, the graph's variables,
collections and scope counters are restored (``Graph._atomic``).
"""
import functools
import inspect

import torch

from . import graph as graph_lib
from . import ops, utils
from .arg_scope import add_arg_scope
from .initializers import ones_initializer, xavier_initializer, zeros_initializer
from . import tf_batch_norm
from .scope import (VariableScope, _StackedRegularizers, get_variable_scope, model_variable,
                    variable_scope)

__all__ = ["batch_norm", "separable_conv2d", "separable_convolution2d"]


def collect_named_outputs(collections, alias, outputs):
    """Adds ``outputs`` to ``collections`` with ``alias`` appended to ``outputs.aliases``."""
    if collections:
        alias = alias[:-1] if alias.endswith("/") else alias
        if hasattr(outputs, "aliases"):
            outputs.aliases.append(alias)
        else:
            outputs.aliases = [alias]
        graph_lib.add_to_collections(collections, outputs)
    return outputs


def _variable_collections(variables_collections, name):
    if isinstance(variables_collections, dict):
        return variables_collections.get(name)
    return variables_collections


def _check_outputs_collections(value):
    """A string names one collection here, as in TF's ``add_to_collections`` (slim's nets pass
    their end-points collection so); variables_collections keeps refusing it, since TF would
    iterate it letter by letter."""
    return value if isinstance(value, str) else _check_collections(value, "outputs_collections",
                                                                   allow_dict=False)


def _check_collections(value, argument, allow_dict):
    if value is None:
        return None
    if isinstance(value, dict) and allow_dict:
        for key, names in value.items():
            _check_collections(names, f"{argument}[{key!r}]", allow_dict=False)
        return value
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        kinds = "a list of collection names" + (" or a dict of such lists" if allow_dict else "")
        raise TypeError(f"Invalid {argument} {value!r}: expected {kinds}.")
    utils.check_collection_names(value, argument)
    return value


def _check_variables_match(variables, inputs):
    for variable in variables:
        if variable is not None and variable.device != inputs.device:
            raise ValueError(f"Variable {variable.name} is on device {variable.device}, but "
                             f"inputs are on device {inputs.device}.")


def _channels(inputs, data_format, argument="inputs", channel_axis=None):
    if channel_axis is None:
        channel_axis = 3 if data_format == "NHWC" else 1
    channels = inputs.shape[channel_axis]
    if channels == 0:
        raise ValueError(f"Invalid {argument} shape {list(inputs.shape)}: the channel "
                         "dimension must not be 0.")
    return channels


def _check_scope(scope):
    allowed = "expected a non-empty string, a VariableScope or None."
    if scope is not None and not isinstance(scope, (str, VariableScope)):
        raise TypeError(f"Invalid scope {scope!r}: {allowed}")
    if scope == "":
        raise ValueError(f"Invalid scope {scope!r}: {allowed}")
    return scope


@functools.lru_cache(maxsize=64)  # inspect.signature costs more than a small layer call
def _normalizer_keywords(normalizer_fn):
    """The keyword names ``normalizer_fn`` takes, or None when it takes any (or is opaque)."""
    try:
        parameters = list(inspect.signature(normalizer_fn).parameters.values())
    except (TypeError, ValueError):  # no introspectable signature: the call itself decides
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    # The first parameter receives the layer's output, so it is not a valid key either.
    return tuple(p.name for p in parameters[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _check_normalizer_params(normalizer_fn, params):
    """Unknown keys fail before any variable exists, naming the keys the normalizer takes."""
    if normalizer_fn is None or not params:
        return
    if ops._only_torch_ops():  # torch.compile traces the plain function (it warns on lru_cache)
        allowed = _normalizer_keywords.__wrapped__(normalizer_fn)
    else:
        try:
            allowed = _normalizer_keywords(normalizer_fn)
        except TypeError:  # an unhashable callable
            allowed = _normalizer_keywords.__wrapped__(normalizer_fn)
    if allowed is None:
        return
    allowed = list(allowed)
    unknown = [key for key in params if key not in allowed]
    if unknown:  # a TypeError, as the call with these keywords raises in TF
        name = getattr(normalizer_fn, "__name__", repr(normalizer_fn))
        raise TypeError(f"Invalid normalizer_params keys {unknown} for normalizer_fn {name}: "
                        f"should be among {allowed}.")


def _check_conv_layer_options(activation_fn, normalizer_fn, normalizer_params,
                              weights_initializer, weights_regularizer, biases_initializer,
                              biases_regularizer, variables_collections, outputs_collections,
                              trainable, scope):
    """Checks the options slim's convolution layers share, before any variable exists."""
    utils.check_callable(activation_fn, "activation_fn")
    utils.check_callable(normalizer_fn, "normalizer_fn")
    utils.check_params(normalizer_params, "normalizer_params")
    _check_normalizer_params(normalizer_fn, normalizer_params)
    utils.check_callable(weights_initializer, "weights_initializer")
    utils.check_callable(weights_regularizer, "weights_regularizer")
    utils.check_callable(biases_initializer, "biases_initializer")
    utils.check_callable(biases_regularizer, "biases_regularizer")
    _check_collections(variables_collections, "variables_collections", allow_dict=True)
    _check_outputs_collections(outputs_collections)
    utils.check_flag(trainable, "trainable")
    _check_scope(scope)


def layer_weight(name, shape, initializer, regularizer, collections, create):
    """A model variable as TF's core layers (``tf.layers``) add their weights.

    ``get_variable`` gets no regularizer, so the variable scope's applies;
    the layer's own is then added as a loss of its own, for a variable this
    call creates (``Layer.add_weight``). slim's ``conv2d``, its
    ``separable_conv2d`` with ``num_outputs`` and its ``batch_norm`` on the
    default path run such layers: under a scope regularizer a weight there
    carries both penalties, as in TF.
    """
    if regularizer is not None:
        regularizer = _StackedRegularizers(get_variable_scope().regularizer, regularizer)
    return model_variable(name, shape, initializer=initializer, regularizer=regularizer,
                          collections=collections, **create)


def _biases_unless_normalized(shape, normalizer_fn, biases_initializer, biases_regularizer,
                              variables_collections, create, of_layer):
    """slim creates ``biases`` only without a normalizer and with an initializer.

    ``of_layer``: created as a ``tf.layers`` layer's weight (see :func:`layer_weight`).
    """
    if normalizer_fn is not None or biases_initializer is None:
        return None
    collections = _variable_collections(variables_collections, "biases")
    if of_layer:
        return layer_weight("biases", shape, biases_initializer, biases_regularizer, collections,
                            create)
    return model_variable("biases", shape, initializer=biases_initializer,
                          regularizer=biases_regularizer, collections=collections, **create)


def _normalize_activate_collect(outputs, normalizer_fn, normalizer_params, activation_fn,
                                outputs_collections, alias):
    """slim's epilogue: normalizer (in the layer scope), activation, outputs collections."""
    if normalizer_fn is not None:
        outputs = normalizer_fn(outputs, **(normalizer_params or {}))
    if activation_fn is not None:
        outputs = activation_fn(outputs)
    return collect_named_outputs(outputs_collections, alias, outputs)


@add_arg_scope
def separable_conv2d(inputs, num_outputs, kernel_size, depth_multiplier, stride=1,
                     padding="SAME", data_format="NHWC", rate=1, activation_fn=torch.relu,
                     normalizer_fn=None, normalizer_params=None,
                     weights_initializer=xavier_initializer(), weights_regularizer=None,
                     biases_initializer=zeros_initializer(), biases_regularizer=None,
                     reuse=None, variables_collections=None, outputs_collections=None,
                     trainable=True, scope=None):
    """Adds a depth-separable 2-D convolution with an optional normalizer, as TF 1.4.

    A depthwise convolution (``depthwise_weights`` ``[kh, kw, cin, m]``) acts
    on each channel; if ``num_outputs`` is not None a pointwise convolution
    (``pointwise_weights`` ``[1, 1, cin*m, num_outputs]``) mixes channels.
    Then ``biases`` are added if there is no ``normalizer_fn`` and
    ``biases_initializer`` is not None, else ``normalizer_fn`` runs inside the
    layer scope; finally ``activation_fn``.

    Args:
        inputs: 4-D torch tensor or numpy array in ``data_format``.
        num_outputs: pointwise filters, or None to skip the pointwise stage.
        kernel_size: int or ``[kernel_height, kernel_width]``.
        depth_multiplier: depthwise output channels per input channel.
        stride: int or pair; applies to the depthwise stage.
        padding: ``'SAME'`` or ``'VALID'``, any case.
        data_format: ``'NHWC'`` or ``'NCHW'``.
        rate: int or pair of dilation rates; if any is above 1 both strides
            must be 1.
        activation_fn: callable or None for linear.
        normalizer_fn: callable used instead of biases, e.g. :func:`batch_norm`.
        normalizer_params: dict of keyword arguments for ``normalizer_fn``.
        weights_initializer, weights_regularizer: for both weight variables; a
            None initializer is ``get_variable``'s default (the scope's
            initializer, else Xavier uniform), as in TF.
        biases_initializer: initializer of ``biases``; None skips biases.
        biases_regularizer: regularizer of ``biases``.
        reuse: reuse the layer's variables; needs ``scope``.
        variables_collections: list of collection names for all variables,
            or a dict with keys ``'weights'`` and ``'biases'``.
        outputs_collections: collections (a list, or one name as a string) the
            output is added to, with the scope name appended to its ``aliases``.
        trainable: whether the variables are trainable.
        scope: variable scope name; default ``SeparableConv2d`` made unique.

    Returns:
        A tensor of the input's dtype and device, in ``data_format``.

    Raises:
        ValueError: if ``data_format`` is invalid, ``padding`` is unknown, a
            rate and a stride are both above 1, the input is too small for
            VALID padding, or reuse/shape rules of the variables are broken.
        TypeError: if an argument has the wrong type.

    Shape:
        - Input: ``(N, H, W, C)`` (NHWC) or ``(N, C, H, W)`` (NCHW).
        - Output: channels ``num_outputs`` or ``C * depth_multiplier``;
          SAME: ``H_out = ceil(H / stride)``; VALID:
          ``H_out = floor((H - (kh - 1) * rate - 1) / stride) + 1``.

    Example:
        >>> import sepconv as sc, torch
        >>> with sc.Graph().as_default():
        ...     y = sc.separable_conv2d(torch.ones(1, 8, 8, 3), 4, [3, 3], 2, stride=2)
        ...     [v.name for v in sc.global_variables()]
        ['SeparableConv2d/depthwise_weights:0', 'SeparableConv2d/pointwise_weights:0', 'SeparableConv2d/biases:0']
        >>> tuple(y.shape)
        (1, 4, 4, 4)
    """
    utils.data_format(data_format)
    padding = utils.padding_mode(padding)
    kernel = utils.pair(kernel_size, "kernel_size")
    strides = utils.pair(stride, "stride")
    rates = utils.pair(rate, "rate")
    multiplier = utils.positive_int(depth_multiplier, "depth_multiplier")
    if num_outputs is not None:
        num_outputs = utils.positive_int(num_outputs, "num_outputs")
    _check_conv_layer_options(activation_fn, normalizer_fn, normalizer_params, weights_initializer,
                              weights_regularizer, biases_initializer, biases_regularizer,
                              variables_collections, outputs_collections, trainable, scope)
    x = utils.to_tensor(inputs)
    channels = _channels(x, data_format)
    ops.conv_geometry(ops.image_size(x, data_format), kernel, strides, rates, padding)

    with graph_lib.get_default_graph()._atomic():
        with variable_scope(scope, "SeparableConv2d", reuse=reuse) as layer_scope:
            create = dict(dtype=x.dtype, trainable=trainable, device=x.device)
            weights_collections = _variable_collections(variables_collections, "weights")
            depthwise_shape = [kernel[0], kernel[1], channels, multiplier]
            pointwise = None
            if num_outputs is None:  # contrib's own variables
                depthwise = model_variable(
                    "depthwise_weights", depthwise_shape, initializer=weights_initializer,
                    regularizer=weights_regularizer, collections=weights_collections, **create)
            else:  # TF's SeparableConv2D layer
                depthwise = layer_weight("depthwise_weights", depthwise_shape, weights_initializer,
                                         weights_regularizer, weights_collections, create)
                pointwise = layer_weight("pointwise_weights",
                                         [1, 1, channels * multiplier, num_outputs],
                                         weights_initializer, weights_regularizer,
                                         weights_collections, create)
            biases = _biases_unless_normalized(
                [num_outputs or channels * multiplier], normalizer_fn, biases_initializer,
                biases_regularizer, variables_collections, create, of_layer=num_outputs is not None)
            _check_variables_match((depthwise, pointwise, biases), x)
            # ReLU/ReLU6 right after the bias run in place inside ops (same numbers).
            fused = ops.fusable_activation(activation_fn) if normalizer_fn is None else None
            outputs = ops.separable_conv2d(x, depthwise, pointwise, biases, stride=strides,
                                           rate=rates, padding=padding, data_format=data_format,
                                           activation=fused)
            return _normalize_activate_collect(outputs, normalizer_fn, normalizer_params,
                                               None if fused else activation_fn,
                                               outputs_collections, layer_scope.name)


separable_convolution2d = separable_conv2d


def _check_updates_collections(value):
    if value is not None and not isinstance(value, str):
        _check_collections(value, "updates_collections", allow_dict=False)


def _restore_if_call_fails(graph, variables):
    """Registers an undo of the in-place moving-statistics update: a failed call changes nothing."""
    saved = [variable.detach().clone() for variable in variables]

    def restore():
        with torch.no_grad():
            for variable, value in zip(variables, saved):
                variable.copy_(value)

    graph._record_undo(restore)


def _batch_norm_variable_dtype(name, input_dtype):
    """float32 for half inputs, as TF, unless the variable exists in the input's dtype.

    ``Template.half()`` converts every variable, batch norm's too; those are
    reused as converted (and widened for the math by :mod:`tf_batch_norm`).
    """
    dtype = ops.batch_norm_dtype(input_dtype)
    if dtype != input_dtype:
        scope_name = get_variable_scope().name
        existing = graph_lib.get_default_graph()._lookup_variable(
            f"{scope_name}/{name}" if scope_name else name)
        if existing is not None and existing.dtype == input_dtype:
            return input_dtype
    return dtype


@add_arg_scope
def batch_norm(inputs, decay=0.999, center=True, scale=False, epsilon=0.001,
               activation_fn=None, param_initializers=None, param_regularizers=None,
               updates_collections=graph_lib.GraphKeys.UPDATE_OPS, is_training=True,
               reuse=None, variables_collections=None, outputs_collections=None,
               trainable=True, batch_weights=None, fused=None, data_format="NHWC",
               zero_debias_moving_mean=False, scope=None, renorm=False,
               renorm_clipping=None, renorm_decay=0.99, adjustment=None):
    """contrib's batch normalization of an input of rank 2 or more.

    Creates ``beta`` (if ``center``), ``gamma`` (if ``scale``) and the
    non-trainable ``moving_mean`` and ``moving_variance`` under scope
    ``BatchNorm``, as the one of TF's three implementations that TF picks
    from the rank, ``fused`` and ``updates_collections`` creates them: the
    order of the variables and collections, how a scope regularizer and
    ``param_regularizers`` combine, and whether the fused kernel runs follow
    it. With ``is_training=True`` it normalises with the batch
    statistics and updates the moving statistics in place, as TF's layers do
    when run eagerly; otherwise it uses the moving statistics. The variables
    have the input's dtype, but float32 for float16 and bfloat16 inputs (as
    TF's), and the output has the input's dtype. Variables a module
    conversion made half precision (``Template.half()``) are reused, and
    widened to float32 for the math.

    Args:
        inputs: tensor of rank 2 or more; the channels are its last axis
            (``NHWC``) or its second (``NCHW``).
        decay: moving-average decay (PyTorch's momentum is ``1 - decay``).
        center, scale: create and apply ``beta`` / ``gamma``.
        epsilon: added to the variance; where TF's fused kernel runs
            (``fused`` None or True, inputs not float64) at least 1.001e-5,
            the minimum TF 1.4's ``fused_batch_norm`` raised it to (TF 2
            dropped that minimum).
        activation_fn: applied after normalisation, or None.
        param_initializers, param_regularizers: dicts keyed by
            ``beta``/``gamma``/``moving_mean``/``moving_variance``.
        updates_collections: ``UPDATE_OPS`` (TF's core layer) or another
            value (contrib's own code); either way the moving statistics are
            updated in place, as TF's ``updates_collections=None`` does.
        is_training: bool, numpy bool, 1 or 0, or a scalar bool tensor.
        reuse, variables_collections, outputs_collections, trainable, scope:
            as in :func:`separable_conv2d`; ``variables_collections`` dict keys
            are the parameter names.
        fused: None or True: TF's fused kernel where TF runs it (rank 2 or 4,
            and rank 5 under ``UPDATE_OPS``; float16/bfloat16/float32), whose
            moving variance takes the Bessel-corrected batch variance; False,
            and other ranks: TF's non-fused ops, the biased batch variance.
            Outputs are the same.
        data_format: ``'NHWC'`` or ``'NCHW'``: the channel axis.
        batch_weights, zero_debias_moving_mean, renorm, renorm_clipping,
        renorm_decay, adjustment: only their defaults are supported.

    Returns:
        The normalised tensor, shaped like ``inputs``.

    Raises:
        ValueError: on an invalid ``data_format``, ``decay`` or ``epsilon``,
            unknown dict keys, or an unsupported option.
        TypeError: on arguments of the wrong type.

    Shape:
        Output shape equals input shape.

    Example:
        >>> import sepconv as sc, torch
        >>> with sc.Graph().as_default():
        ...     y = sc.batch_norm(torch.randn(4, 3, 3, 2), scale=True)
        ...     sorted(v.name for v in sc.global_variables())
        ['BatchNorm/beta:0', 'BatchNorm/gamma:0', 'BatchNorm/moving_mean:0', 'BatchNorm/moving_variance:0']
    """
    del renorm_decay
    utils.data_format(data_format)
    decay = utils.check_fraction(decay, "decay", 0.0, 1.0, high_inclusive=True)
    epsilon = utils.check_fraction(epsilon, "epsilon", 0.0, float("inf"), high_inclusive=False)
    utils.check_bool(center, "center")
    utils.check_bool(scale, "scale")
    trainable = utils.check_flag(trainable, "trainable")
    training = utils.check_training(is_training)
    utils.check_callable(activation_fn, "activation_fn")
    initializers = utils.check_params(param_initializers, "param_initializers", tf_batch_norm.PARAMS)
    regularizers = utils.check_params(param_regularizers, "param_regularizers", ("beta", "gamma"))
    _check_collections(variables_collections, "variables_collections", allow_dict=True)
    _check_outputs_collections(outputs_collections)
    for name, value, default in (("batch_weights", batch_weights, None),
                                 ("zero_debias_moving_mean", zero_debias_moving_mean, False),
                                 ("renorm", renorm, False), ("renorm_clipping", renorm_clipping, None),
                                 ("adjustment", adjustment, None)):
        if value is not default and value != default:
            raise ValueError(f"batch_norm: {name}={value!r} is not supported; only {default!r}.")
    if fused is not None:
        utils.check_bool(fused, "fused")
    _check_updates_collections(updates_collections)
    _check_scope(scope)
    x = utils.to_tensor(inputs, min_rank=2, max_rank=None)
    channel_axis = x.dim() - 1 if data_format == "NHWC" else 1
    channels = _channels(x, data_format, channel_axis=channel_axis)
    path = _batch_norm_path(x.dim(), fused, updates_collections)
    graph = graph_lib.get_default_graph()

    with graph._atomic():
        with variable_scope(scope, "BatchNorm", reuse=reuse) as layer_scope:
            variables = _batch_norm_variables(path, x, channels, center, scale, trainable,
                                              initializers, regularizers, variables_collections)
            beta, gamma, moving_mean, moving_variance = variables
            _check_variables_match(variables, x)
            if training:
                _restore_if_call_fails(graph, (moving_mean, moving_variance))
            # TF's fused kernel: contrib's own fused path, or its core layer's for rank 4 and 5.
            fused_kernel = path == "fused" or (path == "layer" and fused is not False
                                               and x.dim() in (4, 5))
            outputs = tf_batch_norm.batch_norm(
                x, beta, gamma, moving_mean, moving_variance, decay=decay, epsilon=epsilon,
                is_training=training, channel_axis=channel_axis, fused=fused_kernel)
            if activation_fn is not None:
                outputs = activation_fn(outputs)
            return collect_named_outputs(outputs_collections, layer_scope.name, outputs)


def _batch_norm_path(rank, fused, updates_collections):
    """Which of its three implementations TF's ``batch_norm`` runs.

    ``'fused'``: contrib's own fused function (rank 2 or 4, and rank 2 or
    ``updates_collections`` other than ``UPDATE_OPS``); ``'layer'``: the core
    ``BatchNormalization`` layer (``updates_collections`` is ``UPDATE_OPS``);
    ``'legacy'``: contrib's non-fused ops. They differ in the variables'
    creation order, in how regularizers apply and in the kernel.
    """
    default_updates = updates_collections == graph_lib.GraphKeys.UPDATE_OPS
    if fused is not False and rank in (2, 4) and (rank == 2 or not default_updates):
        return "fused"
    return "layer" if default_updates else "legacy"


def _batch_norm_variables(path, x, channels, center, scale, trainable, initializers, regularizers,
                          variables_collections):
    """``(beta, gamma, moving_mean, moving_variance)`` as ``path`` creates them (Nones if off).

    The core layer creates gamma first, applies a scope regularizer and its
    own to beta and gamma, and adds the variables to ``variables_collections``
    afterwards, moving statistics first; contrib's paths create beta first
    with the collections, its legacy path ignoring ``param_regularizers``.
    """
    create = dict(device=x.device)

    def param(name, default_init, is_trainable, regularizer, collections):
        dtype = _batch_norm_variable_dtype(name, x.dtype)
        options = dict(create, dtype=dtype, trainable=is_trainable)
        initializer = initializers.get(name, default_init)
        if path == "layer":
            return layer_weight(name, [channels], initializer, regularizer, collections, options)
        return model_variable(name, [channels], initializer=initializer, regularizer=regularizer,
                              collections=collections, **options)

    def own_collections(name):
        return None if path == "layer" else _variable_collections(variables_collections, name)

    def own_regularizer(name):
        return None if path == "legacy" else regularizers.get(name)

    made = {}
    for name in ("gamma", "beta") if path == "layer" else ("beta", "gamma"):
        if (center if name == "beta" else scale):
            made[name] = param(name, ones_initializer() if name == "gamma" else zeros_initializer(),
                               trainable, own_regularizer(name), own_collections(name))
    made["moving_mean"] = param("moving_mean", zeros_initializer(), False, None,
                                own_collections("moving_mean"))
    made["moving_variance"] = param("moving_variance", ones_initializer(), False, None,
                                    own_collections("moving_variance"))
    if path == "layer":
        for name in ("moving_mean", "moving_variance", "beta", "gamma"):
            if name in made:
                for key in _variable_collections(variables_collections, name) or ():
                    if not any(v is made[name] for v in graph_lib.get_collection(key)):
                        graph_lib.add_to_collection(key, made[name])
    return tuple(made.get(name) for name in ("beta", "gamma", "moving_mean", "moving_variance"))
