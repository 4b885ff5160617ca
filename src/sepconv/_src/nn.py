"""PyTorch-native modules: ``SeparableConv2d``, ``BatchNorm`` and ``Template``.

The modules keep TF-layout parameters under TF's names and call the same
functional core (:mod:`ops`) as the TF1-style layers, so a module and
:func:`sepconv.separable_conv2d` with the same weights give the same numbers.
``Template`` runs a TF1-style model function in its own :class:`Graph` and
registers the variables it creates as parameters (trainable) and buffers
(non-trainable), keyed by their TF names.
"""
import collections
import functools
import inspect

import numpy as np
import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, is_lazy

from . import checkpoint as ckpt_lib
from . import ops, utils
from .graph import Graph, Variable
from .initializers import ones_initializer, xavier_initializer, zeros_initializer
from .scope import get_variable_scope, variable_scope

__all__ = ["BatchNorm", "SeparableConv2d", "Template", "TFCheckpointLoadResult"]

_BATCH_NORM_PARAMS = ("beta", "gamma", "moving_mean", "moving_variance")

TFCheckpointLoadResult = collections.namedtuple(
    "TFCheckpointLoadResult", ["missing_keys", "unexpected_keys"])
TFCheckpointLoadResult.__doc__ = """What ``load_tf_checkpoint`` did not match.

Attributes:
    missing_keys: TF names the module wanted that the checkpoint lacks.
    unexpected_keys: checkpoint names under the module's scope it did not use.
"""


def _channel_axis(data_format):
    return 3 if data_format == "NHWC" else 1


def _new_param(shape, lazy, trainable, factory):
    """A parameter of ``shape`` (uninitialised memory), or a lazy one when ``lazy``."""
    if lazy:
        return UninitializedParameter(requires_grad=trainable, **factory)
    return nn.Parameter(torch.empty(shape, **factory), requires_grad=trainable)


def _new_buffer(shape, lazy, factory):
    return UninitializedBuffer(**factory) if lazy else torch.empty(shape, **factory)


def _fill_(tensor, initializer):
    """Fills ``tensor`` in place with ``initializer(shape, dtype=...)``, as ``get_variable`` does."""
    if tensor is None or is_lazy(tensor):
        return
    with torch.no_grad():
        value = torch.as_tensor(initializer(list(tensor.shape), dtype=tensor.dtype))
        tensor.copy_(value)


def _check_input_channels(x, expected, data_format):
    channels = x.shape[_channel_axis(data_format)]
    if channels != expected:
        raise ValueError(f"Invalid inputs shape {list(x.shape)}: expected {expected} channels "
                         f"on axis {_channel_axis(data_format)} ({data_format}), as the module's "
                         f"weights were made for.")


# ----------------------------------------------------------------------------
# BatchNorm
# ----------------------------------------------------------------------------
class BatchNorm(LazyModuleMixin, nn.Module):
    """contrib's ``batch_norm`` as a module: TF's decay, epsilon, center and scale.

    ``gamma`` (if ``scale``) and ``beta`` (if ``center``) are parameters;
    ``moving_mean`` and ``moving_variance`` are buffers. In training mode the
    batch statistics normalise and the moving statistics are updated in place
    (``moving = moving * decay + batch * (1 - decay)``); in eval mode the
    moving statistics normalise. The math is :func:`sepconv._src.ops.batch_norm`,
    the same as :func:`sepconv.batch_norm`'s.

    Args:
        num_features: channels, or None to infer them from the first input.
        decay: moving-average decay in ``[0, 1]`` (PyTorch's momentum is ``1 - decay``).
        center, scale: create and apply ``beta`` / ``gamma``.
        epsilon: added to the variance; > 0.
        activation_fn: applied after normalisation, or None.
        data_format: ``'NHWC'`` or ``'NCHW'``: where the channel axis is.
        param_initializers: dict of initializers keyed by ``beta``, ``gamma``,
            ``moving_mean``, ``moving_variance``.
        trainable: whether ``beta`` and ``gamma`` require gradients.
        device, dtype: factory keyword arguments of the tensors.

    Raises:
        ValueError: on an invalid ``decay``, ``epsilon``, ``data_format`` or
            ``param_initializers`` key.
        TypeError: on arguments of the wrong type.

    Shape:
        Input and output: ``(N, H, W, C)`` (NHWC) or ``(N, C, H, W)`` (NCHW).

    Example:
        >>> import sepconv as sc, torch
        >>> bn = sc.nn.BatchNorm(scale=True)
        >>> y = bn(torch.randn(8, 4, 4, 3))
        >>> sorted(bn.state_dict())
        ['beta', 'gamma', 'moving_mean', 'moving_variance']
        >>> bn.moving_mean.shape
        torch.Size([3])
    """

    tf_scope = "BatchNorm"  # the scope sc.batch_norm opens: checkpoint names are 'BatchNorm/beta'

    def __init__(self, num_features=None, decay=0.999, center=True, scale=False, epsilon=0.001,
                 activation_fn=None, data_format="NHWC", param_initializers=None,
                 trainable=True, *, device=None, dtype=None):
        super().__init__()
        self.decay = utils.check_fraction(decay, "decay", 0.0, 1.0, high_inclusive=True)
        self.epsilon = utils.check_fraction(epsilon, "epsilon", 0.0, float("inf"), high_inclusive=False)
        self.center = utils.check_bool(center, "center")
        self.scale = utils.check_bool(scale, "scale")
        self.activation_fn = utils.check_callable(activation_fn, "activation_fn")
        self.data_format = utils.data_format(data_format)
        self.param_initializers = dict(utils.check_params(param_initializers, "param_initializers",
                                                     _BATCH_NORM_PARAMS))
        trainable = utils.check_bool(trainable, "trainable")
        lazy = num_features is None
        shape = None if lazy else (utils.positive_int(num_features, "num_features"),)
        factory = {"device": device, "dtype": utils.as_dtype(dtype)}
        # TF's layer creates gamma before beta; keep that order in parameters().
        self.gamma = _new_param(shape, lazy, trainable, factory) if scale else None
        self.beta = _new_param(shape, lazy, trainable, factory) if center else None
        self.register_buffer("moving_mean", _new_buffer(shape, lazy, factory))
        self.register_buffer("moving_variance", _new_buffer(shape, lazy, factory))
        self.reset_parameters()

    @property
    def num_features(self):
        """Channels, or None before a lazy module has seen its first input."""
        return None if is_lazy(self.moving_mean) else self.moving_mean.shape[0]

    def _initializer(self, name, default):
        return self.param_initializers.get(name, default)

    def reset_parameters(self):
        """Re-initialises gamma/beta and resets the moving statistics (zeros and ones)."""
        _fill_(self.gamma, self._initializer("gamma", ones_initializer()))
        _fill_(self.beta, self._initializer("beta", zeros_initializer()))
        _fill_(self.moving_mean, self._initializer("moving_mean", zeros_initializer()))
        _fill_(self.moving_variance, self._initializer("moving_variance", ones_initializer()))

    def initialize_parameters(self, inputs):
        """Materialises lazy tensors with the channels of ``inputs`` (called by the first forward)."""
        if not self.has_uninitialized_params():
            return
        x = utils.to_tensor(inputs)
        channels = x.shape[_channel_axis(self.data_format)]
        with torch.no_grad():
            for tensor in (self.gamma, self.beta, self.moving_mean, self.moving_variance):
                if tensor is not None:
                    tensor.materialize((channels,))
            self.reset_parameters()

    def forward(self, inputs):
        """Normalises ``inputs`` with batch (training) or moving (eval) statistics."""
        x = utils.to_tensor(inputs)
        _check_input_channels(x, self.num_features, self.data_format)
        outputs = ops.batch_norm(x, self.beta, self.gamma, self.moving_mean, self.moving_variance,
                                 decay=self.decay, epsilon=self.epsilon, is_training=self.training,
                                 channel_axis=_channel_axis(self.data_format))
        return outputs if self.activation_fn is None else self.activation_fn(outputs)

    def tf_variable_names(self):
        """Maps each ``state_dict`` key to its TF name relative to the layer scope."""
        return {key: f"{self.tf_scope}/{key}" for key in self.state_dict(keep_vars=True)}

    def load_tf_checkpoint(self, path, scope="BatchNorm", strict=True):
        """Loads ``<scope>/beta`` etc. from a TF checkpoint; see :meth:`SeparableConv2d.load_tf_checkpoint`."""
        names = {key: f"{scope}/{key}" for key in self.state_dict(keep_vars=True)}
        return _load_tf_checkpoint(self, path, names, scope, strict)

    def extra_repr(self):
        """The options shown by ``repr``: features, decay, epsilon, center, scale, format."""
        parts = [f"{self.num_features}" if self.num_features is not None else "num_features=None",
                 f"decay={self.decay}", f"epsilon={self.epsilon}", f"center={self.center}",
                 f"scale={self.scale}", f"data_format={self.data_format!r}"]
        if self.activation_fn is not None:
            parts.append(f"activation_fn={_callable_name(self.activation_fn)}")
        return ", ".join(parts)


def _callable_name(fn):
    return getattr(fn, "__name__", None) or type(fn).__name__


# ----------------------------------------------------------------------------
# SeparableConv2d
# ----------------------------------------------------------------------------
class SeparableConv2d(LazyModuleMixin, nn.Module):
    """``tf.contrib.layers.separable_conv2d`` as a module, with TF-layout parameters.

    Parameters keep TF's names and layouts: ``depthwise_weights``
    ``[kh, kw, in_channels, depth_multiplier]``, ``pointwise_weights``
    ``[1, 1, in_channels * depth_multiplier, num_outputs]`` (None when
    ``num_outputs`` is None) and ``biases`` (None with a normalizer or when
    ``biases_initializer`` is None), so a TF checkpoint loads as is. The
    forward pass is :func:`sepconv._src.ops.separable_conv2d`, then the
    normalizer, then ``activation_fn``, exactly as :func:`sepconv.separable_conv2d`.

    ``in_channels=None`` (the default) makes the module lazy, as
    ``torch.nn.LazyConv2d``: the weights are created on the first forward
    pass (or by ``load_state_dict`` / :meth:`load_tf_checkpoint`).

    Args:
        num_outputs: pointwise filters, or None to skip the pointwise stage.
        kernel_size: int or ``(kh, kw)``.
        depth_multiplier: depthwise output channels per input channel.
        stride: int or pair; applies to the depthwise stage.
        padding: ``'SAME'`` or ``'VALID'``, any case.
        data_format: ``'NHWC'`` or ``'NCHW'``.
        rate: int or pair of dilation rates; if any is above 1 both strides must be 1.
        activation_fn: callable or None for linear (default ``torch.relu``, as TF).
        normalizer: a module or callable applied instead of the biases, e.g.
            :class:`BatchNorm` (TF's ``normalizer_fn=batch_norm,
            normalizer_params=p`` is ``normalizer=sc.nn.BatchNorm(**p)``).
        weights_initializer: initializer of both weights (default Xavier uniform).
        weights_regularizer, biases_regularizer: ``fn(tensor) -> loss or None``,
            summed by :meth:`regularization_loss`.
        biases_initializer: initializer of ``biases``; None skips biases.
        trainable: whether the weights require gradients.
        in_channels: input channels, or None to infer them from the first input.
        device, dtype: factory keyword arguments of the parameters.

    Raises:
        ValueError: on an invalid ``padding``, ``data_format``, size, a rate and
            a stride both above 1, or a normalizer whose data_format differs.
        TypeError: on arguments of the wrong type.

    Shape:
        - Input: ``(N, H, W, C)`` (NHWC) or ``(N, C, H, W)`` (NCHW).
        - Output: channels ``num_outputs`` or ``C * depth_multiplier``; SAME:
          ``H_out = ceil(H / stride)``; VALID:
          ``H_out = floor((H - (kh - 1) * rate - 1) / stride) + 1``.

    Example:
        >>> import sepconv as sc, torch
        >>> conv = sc.nn.SeparableConv2d(8, 3, depth_multiplier=2, stride=2)
        >>> y = conv(torch.ones(1, 16, 16, 3))
        >>> tuple(y.shape), conv.in_channels
        ((1, 8, 8, 8), 3)
        >>> {k: tuple(v.shape) for k, v in conv.state_dict().items()}
        {'depthwise_weights': (3, 3, 3, 2), 'pointwise_weights': (1, 1, 6, 8), 'biases': (8,)}
    """

    tf_scope = "SeparableConv2d"  # the default scope of sc.separable_conv2d

    def __init__(self, num_outputs, kernel_size, depth_multiplier, stride=1, padding="SAME",
                 data_format="NHWC", rate=1, activation_fn=torch.relu, normalizer=None,
                 weights_initializer=None, weights_regularizer=None,
                 biases_initializer=zeros_initializer(), biases_regularizer=None,
                 trainable=True, *, in_channels=None, device=None, dtype=None):
        super().__init__()
        self.num_outputs = None if num_outputs is None else utils.positive_int(num_outputs, "num_outputs")
        self.kernel_size = utils.pair(kernel_size, "kernel_size")
        self.depth_multiplier = utils.positive_int(depth_multiplier, "depth_multiplier")
        self.stride = utils.pair(stride, "stride")
        self.padding = utils.padding_mode(padding)
        self.data_format = utils.data_format(data_format)
        self.rate = utils.pair(rate, "rate")
        # TF's rate/stride rule, checked now with the layer's own message (SAME never fails on size).
        ops.conv_geometry(self.kernel_size, self.kernel_size, self.stride, self.rate, "SAME")
        self.activation_fn = utils.check_callable(activation_fn, "activation_fn")
        self.weights_initializer = utils.check_callable(
            weights_initializer if weights_initializer is not None else xavier_initializer(),
            "weights_initializer")
        self.weights_regularizer = utils.check_callable(weights_regularizer, "weights_regularizer")
        self.biases_initializer = utils.check_callable(biases_initializer, "biases_initializer")
        self.biases_regularizer = utils.check_callable(biases_regularizer, "biases_regularizer")
        self.trainable = utils.check_bool(trainable, "trainable")
        self.normalizer = self._check_normalizer(normalizer)
        self._make_parameters(in_channels, {"device": device, "dtype": utils.as_dtype(dtype)})
        self.reset_parameters()

    def _check_normalizer(self, normalizer):
        utils.check_callable(normalizer, "normalizer")
        normalizer_format = getattr(normalizer, "data_format", self.data_format)
        if normalizer_format != self.data_format:
            raise ValueError(f"Invalid normalizer {type(normalizer).__name__} with data_format="
                             f"{normalizer_format!r}: it must match the layer's data_format "
                             f"{self.data_format!r}.")
        return normalizer

    def _make_parameters(self, in_channels, factory):
        lazy = in_channels is None
        cin = None if lazy else utils.positive_int(in_channels, "in_channels")
        kh, kw = self.kernel_size
        mult = self.depth_multiplier
        self.depthwise_weights = _new_param(None if lazy else (kh, kw, cin, mult), lazy,
                                            self.trainable, factory)
        self.pointwise_weights = None
        if self.num_outputs is not None:
            self.pointwise_weights = _new_param(None if lazy else (1, 1, cin * mult, self.num_outputs),
                                                lazy, self.trainable, factory)
        self.biases = None
        if self.normalizer is None and self.biases_initializer is not None:
            channels_out = self.num_outputs or (None if lazy else cin * mult)
            self.biases = _new_param(None if lazy else (channels_out,), lazy, self.trainable, factory)

    @property
    def in_channels(self):
        """Input channels, or None before a lazy module has seen its first input."""
        return None if is_lazy(self.depthwise_weights) else self.depthwise_weights.shape[2]

    @property
    def out_channels(self):
        """``num_outputs``, else ``in_channels * depth_multiplier`` (None while lazy)."""
        if self.num_outputs is not None:
            return self.num_outputs
        return None if self.in_channels is None else self.in_channels * self.depth_multiplier

    def reset_parameters(self):
        """Draws the weights from ``weights_initializer`` (default Xavier) and the biases.

        With the default, ``depthwise_weights`` are uniform within
        ``sqrt(6 / (kh*kw*(in_channels + depth_multiplier)))``: the fans of
        :func:`sepconv.xavier_initializer`. The normalizer is reset too when
        it has a ``reset_parameters``.
        """
        _fill_(self.depthwise_weights, self.weights_initializer)
        _fill_(self.pointwise_weights, self.weights_initializer)
        _fill_(self.biases, self.biases_initializer)
        if isinstance(self.normalizer, nn.Module) and hasattr(self.normalizer, "reset_parameters"):
            self.normalizer.reset_parameters()

    def initialize_parameters(self, inputs):
        """Materialises lazy weights with the channels of ``inputs`` (called by the first forward).

        Each lazy tensor is materialised on its own, so weights already taken
        from a checkpoint (``load_tf_checkpoint(..., strict=False)``) are kept.
        """
        if not self.has_uninitialized_params():
            return
        x = utils.to_tensor(inputs)
        cin = self.in_channels or x.shape[_channel_axis(self.data_format)]
        if cin == 0:
            raise ValueError(f"Invalid inputs shape {list(x.shape)}: the channel dimension must not be 0.")
        kh, kw = self.kernel_size
        mult = self.depth_multiplier
        shapes = ((self.depthwise_weights, (kh, kw, cin, mult), self.weights_initializer),
                  (self.pointwise_weights, (1, 1, cin * mult, self.num_outputs), self.weights_initializer),
                  (self.biases, (self.num_outputs or cin * mult,), self.biases_initializer))
        with torch.no_grad():
            for tensor, shape, initializer in shapes:
                if tensor is not None and is_lazy(tensor):
                    tensor.materialize(shape)
                    _fill_(tensor, initializer)

    def forward(self, inputs):
        """Applies the separable convolution, the normalizer and the activation."""
        x = utils.to_tensor(inputs)
        _check_input_channels(x, self.in_channels, self.data_format)
        outputs = ops.separable_conv2d(x, self.depthwise_weights, self.pointwise_weights,
                                       self.biases, stride=self.stride, rate=self.rate,
                                       padding=self.padding, data_format=self.data_format)
        if self.normalizer is not None:
            outputs = self.normalizer(outputs)
        if self.activation_fn is not None:
            outputs = self.activation_fn(outputs)
        return outputs

    def regularization_loss(self):
        """The sum of the weight and bias regularizers' losses (a 0 tensor if none apply)."""
        losses = []
        for tensor, regularizer in ((self.depthwise_weights, self.weights_regularizer),
                                    (self.pointwise_weights, self.weights_regularizer),
                                    (self.biases, self.biases_regularizer)):
            if tensor is not None and regularizer is not None:
                loss = regularizer(tensor)
                if loss is not None:
                    losses.append(loss)
        if not losses:
            return self.depthwise_weights.new_zeros(())
        return functools.reduce(torch.add, losses)

    def tf_variable_names(self):
        """Maps each ``state_dict`` key to its TF name relative to the layer scope.

        Example:
            >>> import sepconv as sc
            >>> conv = sc.nn.SeparableConv2d(4, 3, 1, normalizer=sc.nn.BatchNorm(), in_channels=2)
            >>> conv.tf_variable_names()["normalizer.beta"]
            'BatchNorm/beta'
        """
        names = {}
        for key in self.state_dict(keep_vars=True):
            head, _, rest = key.partition(".")
            if head == "normalizer" and isinstance(self.normalizer, BatchNorm):
                names[key] = f"{self.normalizer.tf_scope}/{rest}"
            else:
                names[key] = key
        return names

    def load_tf_checkpoint(self, path, scope="SeparableConv2d", strict=True):
        """Loads this layer's variables from a TF V2 checkpoint.

        The variable of ``state_dict`` key ``k`` is read from
        ``<scope>/<tf name of k>`` (e.g. ``SeparableConv2d/depthwise_weights``,
        ``SeparableConv2d/BatchNorm/moving_mean``). A lazy module takes its
        shapes from the checkpoint. Values are cast to the module's dtype and
        device.

        Args:
            path: a checkpoint prefix, or a directory with a ``checkpoint`` file.
            scope: the layer's scope in the checkpoint.
            strict: raise if a variable is missing from the checkpoint.

        Returns:
            A :class:`TFCheckpointLoadResult`.

        Raises:
            ValueError: a missing variable (when ``strict``) or a shape that
                differs from the module's; ``CheckpointError`` (a ValueError)
                for an unreadable checkpoint.
        """
        names = {key: f"{scope}/{name}" for key, name in self.tf_variable_names().items()}
        return _load_tf_checkpoint(self, path, names, scope, strict)

    def extra_repr(self):
        """The options shown by ``repr``; strides, rates and flags only when not the default."""
        parts = [f"in_channels={self.in_channels}", f"num_outputs={self.num_outputs}",
                 f"kernel_size={self.kernel_size}", f"depth_multiplier={self.depth_multiplier}"]
        if self.stride != (1, 1):
            parts.append(f"stride={self.stride}")
        if self.rate != (1, 1):
            parts.append(f"rate={self.rate}")
        parts += [f"padding={self.padding!r}", f"data_format={self.data_format!r}"]
        parts.append("activation_fn=" + (_callable_name(self.activation_fn)
                                         if self.activation_fn is not None else "None"))
        if self.biases is None and self.normalizer is None:
            parts.append("biases=None")
        if not self.trainable:
            parts.append("trainable=False")
        return ", ".join(parts)


# ----------------------------------------------------------------------------
# Loading TF checkpoints into modules
# ----------------------------------------------------------------------------
def _load_tf_checkpoint(module, path, names, scope, strict):
    """Copies checkpoint tensors ``names[key]`` into ``module.state_dict()[key]``."""
    reader = ckpt_lib.BundleReader(ckpt_lib.resolve_checkpoint_path(path))
    current = module.state_dict(keep_vars=True)
    loaded, missing = {}, []
    for key, tf_name in names.items():
        if not reader.has_tensor(tf_name):
            missing.append(tf_name)
            continue
        value = torch.from_numpy(np.array(reader.get_tensor(tf_name)))
        target = current[key]
        if not is_lazy(target) and tuple(target.shape) != tuple(value.shape):
            raise ValueError(f"Checkpoint variable {tf_name} has shape {list(value.shape)}, but "
                             f"{type(module).__name__} {key!r} has shape {list(target.shape)}.")
        loaded[key] = value
    if strict and missing:
        raise ValueError(f"Variables {missing} not found in checkpoint {reader.prefix}; it has "
                         f"{sorted(reader.get_variable_to_shape_map())}.")
    module.load_state_dict(loaded, strict=False)
    wanted = set(names.values())
    prefix = f"{scope}/" if scope else ""
    unexpected = sorted(name for name in reader.get_variable_to_shape_map()
                        if name.startswith(prefix) and name not in wanted)
    return TFCheckpointLoadResult(missing, unexpected)


# ----------------------------------------------------------------------------
# Template
# ----------------------------------------------------------------------------
def _takes_is_training(fn):
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    parameter = parameters.get("is_training")
    return parameter is not None and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD,
                                                        parameter.KEYWORD_ONLY)


class _NewOutputsDropped:
    """Removes the output tensors a call added to the graph's collections.

    ``outputs_collections`` append every call's activations; kept, they would
    hold each step's autograd graph alive. Variables and regularization losses
    (which are not plain tensors) stay.
    """

    def __init__(self, graph):
        self.graph = graph

    def __enter__(self):
        self.sizes = {key: len(self.graph.get_collection_ref(key))
                      for key in self.graph.get_all_collection_keys()}

    def __exit__(self, *exc):
        for key in self.graph.get_all_collection_keys():
            items = self.graph.get_collection_ref(key)
            start = self.sizes.get(key, 0)
            items[start:] = [item for item in items[start:]
                             if not isinstance(item, torch.Tensor) or isinstance(item, Variable)]


class Template(nn.Module):
    """Runs a TF1-style model function as an ``nn.Module``.

    ``fn(*inputs, **kwargs)`` may use variable scopes, ``arg_scope``,
    :func:`sepconv.separable_conv2d`, :func:`sepconv.batch_norm` and
    :func:`sepconv.get_variable`. It runs in the module's own
    :class:`sepconv.Graph` (see :attr:`graph`). The first call (or
    :meth:`build`) creates the variables and registers them: trainable ones as
    parameters, non-trainable ones (moving statistics) as buffers. Later calls
    reuse them with ``make_template``'s rules: creating a new variable raises.

    Keys are the TF op names (``'MobilenetV1/Conv2d_0/weights'``), in
    ``named_parameters()``, ``named_buffers()`` and ``state_dict()`` (``'/'``
    is a valid attribute name for torch; a TF name containing ``'.'``, torch's
    submodule separator, raises ``ValueError`` when created); the
    registered tensors *are* the graph's variables, and stay so through
    ``.to()``, ``.half()``, ``load_state_dict`` (also with ``assign=True``),
    copying and pickling. Each call looks every variable up in the module,
    so ``torch.func.functional_call``, ``torch.export`` and ONNX export see
    the module's tensors.

    ``is_training``: if ``fn`` has a parameter named ``is_training`` and the
    caller does not pass it, the module passes ``self.training``, so
    ``train()`` / ``eval()`` switch batch norm between batch statistics (which
    update the moving averages) and moving statistics.

    As with lazy modules, build the template before making an optimizer,
    wrapping it in ``DistributedDataParallel`` or loading a state dict: until
    then it has no parameters.

    Args:
        fn: the model function. Output tensors it adds to collections are
            removed after each call (use the return value).
        **kwargs: keyword arguments bound to ``fn``, as ``make_template``'s.

    Raises:
        TypeError: if ``fn`` is not callable.

    Example:
        >>> import sepconv as sc, torch
        >>> def net(images, is_training=True):
        ...     with sc.variable_scope("Net"):
        ...         x = sc.separable_conv2d(images, 8, 3, 1, normalizer_fn=sc.batch_norm,
        ...                                 normalizer_params={"is_training": is_training})
        ...         return sc.separable_conv2d(x, 2, 3, 1, activation_fn=None)
        >>> model = sc.nn.Template(net).build(torch.zeros(1, 8, 8, 3))
        >>> [name for name, _ in model.named_parameters()][:3]
        ['Net/SeparableConv2d/depthwise_weights', 'Net/SeparableConv2d/pointwise_weights', 'Net/SeparableConv2d/BatchNorm/beta']
        >>> [name for name, _ in model.named_buffers()]
        ['Net/SeparableConv2d/BatchNorm/moving_mean', 'Net/SeparableConv2d/BatchNorm/moving_variance']
        >>> model.eval()(torch.zeros(2, 8, 8, 3)).shape
        torch.Size([2, 8, 8, 2])
    """

    def __init__(self, fn, **kwargs):
        super().__init__()
        utils.check_callable(fn, "fn", allow_none=False)
        self._fn = functools.partial(fn, **kwargs) if kwargs else fn
        self._passes_is_training = _takes_is_training(fn) and "is_training" not in kwargs
        self._graph = Graph()
        self._tf_names = {}  # op names of the registered variables (a dict: ordered, O(1) lookup)
        self._built = False

    @property
    def graph(self):
        """The :class:`sepconv.Graph` the function runs in (its variables are this module's)."""
        return self._graph

    @property
    def built(self):
        """Whether the variables exist (after the first call or :meth:`build`)."""
        return self._built

    # -- calling ----------------------------------------------------------------
    def forward(self, *args, **kwargs):
        """Calls ``fn``; the first call creates and registers the variables."""
        if self._passes_is_training and "is_training" not in kwargs:
            kwargs["is_training"] = self.training
        if not self._built:
            return self._first_call(args, kwargs)
        return self._run(self._reusing_getter, True, args, kwargs)

    def build(self, *args, **kwargs):
        """Creates the variables by calling ``fn`` once on example inputs; returns ``self``.

        Unlike a first forward pass, ``build`` computes no gradients and leaves
        the non-trainable variables (moving statistics) at their initial
        values. Does nothing if the template is already built.
        """
        if self._built:
            return self
        self._initial_values = {}
        try:
            with torch.no_grad():
                self.forward(*args, **kwargs)
            with torch.no_grad():
                for name, value in self._initial_values.items():
                    self._tensor(name).copy_(value)
        finally:
            del self._initial_values
        return self

    def _run(self, getter, reuse, args, kwargs):
        graph = self._graph
        with graph.as_default(), graph._atomic():
            with variable_scope(get_variable_scope(), reuse=reuse, custom_getter=getter):
                with _NewOutputsDropped(graph):
                    return self._fn(*args, **kwargs)

    def _first_call(self, args, kwargs):
        try:
            outputs = self._run(self._registering_getter, None, args, kwargs)
        except BaseException:
            self._unregister_all()  # the graph rolled its variables back too
            raise
        self._built = True
        return outputs

    def _registering_getter(self, getter, name, *args, **kwargs):
        variable = getter(name, *args, **kwargs)
        op_name = variable.op_name
        if op_name not in self._tf_names:
            self._register(op_name, variable)
        return variable

    def _reusing_getter(self, getter, name, *args, **kwargs):
        getter(name, *args, **kwargs)  # TF's reuse checks: existence, shape, dtype
        if name not in self._tf_names:
            raise ValueError(f"Template: variable {name} was created by a call after the first; "
                             "every variable must be created by the first call (or build).")
        # The module's tensor, not the graph's object: under functional_call or
        # export tracing the module holds substitutes.
        return self._tensor(name)

    def _register(self, op_name, variable):
        if "." in op_name:
            raise ValueError(f"Template: variable name {op_name!r} contains '.', which "
                             "torch.nn.Module cannot register; rename the scope or variable.")
        if variable.requires_grad:
            self.register_parameter(op_name, variable)
        else:
            self.register_buffer(op_name, variable)
            if hasattr(self, "_initial_values"):
                self._initial_values[op_name] = variable.detach().clone()
        self._tf_names[op_name] = None

    def _unregister_all(self):
        for name in self._tf_names:
            self._parameters.pop(name, None)
            self._buffers.pop(name, None)
        self._tf_names = {}

    def _tensor(self, name):
        tensor = self._parameters.get(name)
        return tensor if tensor is not None else self._buffers[name]

    # -- keeping the graph's variables and the module's tensors the same objects
    def _apply(self, fn, recurse=True):
        # Module._apply swaps a parameter's data in place when the new tensor is of a
        # compatible type (CPU <-> CUDA, any dtype) but replaces buffers, and replaces
        # parameters too across incompatible types (e.g. to the meta device).
        before = {name: self._tensor(name) for name in self._tf_names}
        result = super()._apply(fn, recurse)
        self._restore_identity(before)
        return result

    def _restore_identity(self, before):
        """After a tensor was replaced, makes the graph's variable and the module's tensor one object."""
        for name, variable in before.items():
            table = self._parameters if name in self._parameters else self._buffers
            current = table[name]
            if current is variable:
                continue
            data = current.data if isinstance(current, nn.Parameter) else current
            if torch._has_compatible_shallow_copy_type(variable, data):
                with torch.no_grad():
                    variable.data = data  # the graph's object keeps its identity
                table[name] = variable
            else:
                replacement = Variable(data.detach(), variable.requires_grad, variable.name)
                table[name] = replacement
                self._rebind_graph_variable(variable, replacement)

    def _rebind_graph_variable(self, old, new):
        """Points the graph's store, collections and regularization losses at ``new``."""
        graph = self._graph
        graph._vars[old.op_name] = new
        for key in graph.get_all_collection_keys():
            items = graph.get_collection_ref(key)
            for index, item in enumerate(items):
                if item is old:
                    items[index] = new
                elif getattr(item, "variable", None) is old:  # a RegularizationLoss
                    item.variable = new

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        if not self._built:
            if any(key.startswith(prefix) for key in state_dict):
                error_msgs.append("Template is not built: call build(example_inputs) before "
                                  "load_state_dict, so that its variables exist.")
            return
        before = {name: self._tensor(name) for name in self._tf_names}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self._restore_identity(before)  # load_state_dict(assign=True) replaces tensors

    # -- pickling and copying ------------------------------------------------------
    def __getstate__(self):
        # A Graph holds a lock and per-thread scope state, which do not pickle; its
        # variables and collections do, and pickle's memo keeps them the same
        # objects as the module's parameters and buffers.
        state = dict(self.__dict__)
        graph = state.pop("_graph")
        state["_graph_contents"] = (graph._vars, graph._collections)
        return state

    def __setstate__(self, state):
        variables, collections_ = state.pop("_graph_contents")
        super().__setstate__(state)
        self._graph = Graph()
        self._graph._vars = variables
        self._graph._collections = collections_

    # -- checkpoints ---------------------------------------------------------------
    def load_tf_checkpoint(self, path, strict=True):
        """Loads every variable from the TF checkpoint entry of the same name.

        Args:
            path: a checkpoint prefix, or a directory with a ``checkpoint`` file.
            strict: raise if a variable is missing from the checkpoint.

        Returns:
            A :class:`TFCheckpointLoadResult`; ``unexpected_keys`` lists the
            checkpoint's other entries (e.g. ``global_step``).

        Raises:
            RuntimeError: if the template is not built.
            ValueError: a missing variable (when ``strict``) or a shape mismatch.
        """
        if not self._built:
            raise RuntimeError("Template is not built: call build(example_inputs) before "
                               "load_tf_checkpoint, so that its variables exist.")
        return _load_tf_checkpoint(self, path, {name: name for name in self._tf_names}, "", strict)

    def regularization_losses(self):
        """The values of the graph's ``REGULARIZATION_LOSSES`` (regularizers of the variables)."""
        from .regularizers import get_regularization_losses
        with self._graph.as_default():
            return get_regularization_losses()

    def extra_repr(self):
        """The function's name and the number of variables (``unbuilt`` before the first call)."""
        name = getattr(self._fn, "__name__", None) or _callable_name(getattr(self._fn, "func", self._fn))
        return f"fn={name}, variables={len(self._tf_names) if self._built else 'unbuilt'}"
