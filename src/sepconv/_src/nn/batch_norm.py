"""``BatchNorm``: contrib's ``batch_norm`` as a module."""
import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin

from .. import tf_batch_norm, utils
from ..initializers import ones_initializer, zeros_initializer
from .layer_utils import (_Swappable, _callable_name, _channel_axis, _check_input_channels,
                          _fill_, _is_uninitialized, _new_buffer, _new_param)
from .tf_checkpoint import _load_tf_checkpoint


def _check_epsilon(epsilon):
    value = utils.check_fraction(epsilon, "epsilon", 0.0, float("inf"), high_inclusive=False)
    if value == 0.0:  # a constant channel would divide by zero
        raise ValueError(f"Invalid epsilon {epsilon!r}: must be > 0.")
    return value


class BatchNorm(_Swappable, LazyModuleMixin, nn.Module):
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
        epsilon: added to the variance; > 0. As :func:`sepconv.batch_norm`,
            at least 1.001e-5 where TF's fused kernel runs (``fused`` None or
            True, inputs not float64).
        activation_fn: applied after normalisation, or None.
        data_format: ``'NHWC'`` or ``'NCHW'``: where the channel axis is.
        param_initializers: dict of initializers (callables) keyed by ``beta``,
            ``gamma``, ``moving_mean``, ``moving_variance``.
        trainable: whether ``beta`` and ``gamma`` require gradients.
        fused: TF's ``fused``: None or True update the moving variance with the
            Bessel-corrected batch variance (TF's fused kernel), False with the
            biased one (its non-fused ops); see :func:`sepconv.batch_norm`.
        device, dtype: factory keyword arguments of the tensors; ``dtype`` a
            floating-point one. After ``.half()`` or ``.bfloat16()`` the math
            still runs in float32, as TF's for its float32 variables.

    Raises:
        ValueError: on an invalid ``decay``, ``epsilon`` (<= 0),
            ``data_format`` or ``param_initializers`` key.
        TypeError: on arguments of the wrong type, a ``param_initializers``
            value that is not callable, or a ``dtype`` that is not floating-point.

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
                 trainable=True, fused=None, *, device=None, dtype=None):
        super().__init__()
        self.decay = utils.check_fraction(decay, "decay", 0.0, 1.0, high_inclusive=True)
        self.epsilon = _check_epsilon(epsilon)
        self.center = utils.check_bool(center, "center")
        self.scale = utils.check_bool(scale, "scale")
        self.activation_fn = utils.check_callable(activation_fn, "activation_fn")
        self.data_format = utils.data_format(data_format)
        self.param_initializers = dict(utils.check_callable_values(
            utils.check_params(param_initializers, "param_initializers", tf_batch_norm.PARAMS),
            "param_initializers"))
        trainable = utils.check_bool(trainable, "trainable")
        self.fused = None if fused is None else utils.check_bool(fused, "fused")
        lazy = num_features is None
        shape = None if lazy else (utils.positive_int(num_features, "num_features"),)
        factory = {"device": utils.check_device(device), "dtype": utils.floating_dtype(dtype)}
        # TF's layer creates gamma before beta; keep that order in parameters().
        self.gamma = _new_param(shape, lazy, trainable, factory) if scale else None
        self.beta = _new_param(shape, lazy, trainable, factory) if center else None
        self.register_buffer("moving_mean", _new_buffer(shape, lazy, factory))
        self.register_buffer("moving_variance", _new_buffer(shape, lazy, factory))
        self.reset_parameters()

    @property
    def num_features(self):
        """Channels, or None before a lazy module has seen its first input or loaded a tensor."""
        for tensor in (self.moving_mean, self.moving_variance, self.beta, self.gamma):
            if tensor is not None and not _is_uninitialized(tensor):
                return tensor.shape[0]
        return None

    def _initializers(self):
        defaults = (("gamma", ones_initializer()), ("beta", zeros_initializer()),
                    ("moving_mean", zeros_initializer()), ("moving_variance", ones_initializer()))
        return [(name, self.param_initializers.get(name, default)) for name, default in defaults]

    def reset_parameters(self):
        """Re-initialises gamma/beta and resets the moving statistics (zeros and ones)."""
        _fill_(self, self._initializers())

    def initialize_parameters(self, inputs):
        """Materialises lazy tensors with the channels of ``inputs`` (called by the first forward).

        Tensors already loaded (``load_state_dict(..., strict=False)``) are
        kept, and fix the channels.

        Raises:
            ValueError: if ``inputs`` have other channels than the tensors
                already loaded (nothing is materialised then).
        """
        if not self.has_uninitialized_params():
            return
        x = utils.to_tensor(inputs)
        channels = self.num_features
        if channels is None:
            channels = x.shape[_channel_axis(self.data_format)]
        _check_input_channels(x, channels, self.data_format)
        initializers = self._initializers()
        _fill_(self, initializers, lazy_shapes={key: (channels,) for key, _ in initializers})

    def forward(self, inputs):
        """Normalises ``inputs`` with batch (training) or moving (eval) statistics."""
        x = utils.to_tensor(inputs)
        _check_input_channels(x, self.num_features, self.data_format)
        outputs = tf_batch_norm.batch_norm(
            x, self.beta, self.gamma, self.moving_mean, self.moving_variance, decay=self.decay,
            epsilon=self.epsilon, is_training=self.training,
            channel_axis=_channel_axis(self.data_format), fused=self.fused)
        return outputs if self.activation_fn is None else self.activation_fn(outputs)

    def tf_variable_names(self):
        """Maps each ``state_dict`` key to its TF name, ``<tf_scope>/<key>`` (``BatchNorm/beta``)."""
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
        if self.fused is not None:
            parts.append(f"fused={self.fused}")
        return ", ".join(parts)
