"""``SeparableConv2d``: the separable convolution layer as a module."""
import functools

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import is_lazy

from .. import ops, tf_batch_norm, utils
from ..initializers import xavier_initializer, zeros_initializer
from .batch_norm import BatchNorm
from .layer_utils import (_Swappable, _callable_name, _channel_axis, _check_input_channels,
                          _fill_, _is_uninitialized, _new_param)
from .tf_checkpoint import _load_tf_checkpoint


def _has_forward_hooks(module):
    """Whether calling ``module`` would run forward hooks or pre-hooks (its own or global ones).

    A lazy module's own pre-hook, which only materialises its parameters, does not count.
    """
    pre_hooks = [hook for hook in module._forward_pre_hooks.values()
                 if getattr(hook, "__func__", None) is not LazyModuleMixin._infer_parameters]
    return bool(module._forward_hooks or pre_hooks
                or torch.nn.modules.module._global_forward_hooks
                or torch.nn.modules.module._global_forward_pre_hooks)


class SeparableConv2d(_Swappable, LazyModuleMixin, nn.Module):
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
        device, dtype: factory keyword arguments of the parameters; ``dtype``
            a floating-point one.

    Raises:
        ValueError: on an invalid ``padding``, ``data_format``, size, a rate and
            a stride both above 1, or a normalizer whose data_format differs.
        TypeError: on arguments of the wrong type (a float or bool size
            included), or a ``dtype`` that is not floating-point.

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
        self._make_parameters(in_channels, {"device": utils.check_device(device),
                                            "dtype": utils.floating_dtype(dtype)})
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
        """Input channels, or None while a lazy module has neither seen an input nor loaded
        a weight that gives them."""
        if not _is_uninitialized(self.depthwise_weights):
            return self.depthwise_weights.shape[2]
        return self._in_channels_of_loaded_weights()

    def _in_channels_of_loaded_weights(self):
        """The input channels that weights loaded into a lazy module (``strict=False``) imply."""
        pointwise = self.pointwise_weights
        if pointwise is not None and not _is_uninitialized(pointwise):
            return pointwise.shape[2] // self.depth_multiplier
        # Biases have num_outputs entries when there is a pointwise stage: no input channels.
        if self.num_outputs is None and self.biases is not None and not _is_uninitialized(self.biases):
            return self.biases.shape[0] // self.depth_multiplier
        return None

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
        _fill_(self, self._initializers())
        if isinstance(self.normalizer, nn.Module) and hasattr(self.normalizer, "reset_parameters"):
            self.normalizer.reset_parameters()

    def initialize_parameters(self, inputs):
        """Materialises lazy weights with the channels of ``inputs`` (called by the first forward).

        Each lazy tensor is materialised on its own, so weights already taken
        from a checkpoint (``load_tf_checkpoint(..., strict=False)``) are kept.

        Raises:
            ValueError: if ``inputs`` have no channels, or other channels than
                the weights already loaded were made for (nothing is
                materialised then).
        """
        if not self.has_uninitialized_params():
            return
        x = utils.to_tensor(inputs)
        cin = self.in_channels
        if cin is None:
            cin = x.shape[_channel_axis(self.data_format)]
            if cin == 0:
                raise ValueError(f"Invalid inputs shape {list(x.shape)}: the channel dimension "
                                 "must not be 0.")
        _check_input_channels(x, cin, self.data_format)
        _fill_(self, self._initializers(), lazy_shapes=self._weight_shapes(cin))

    def _initializers(self):
        return [("depthwise_weights", self.weights_initializer),
                ("pointwise_weights", self.weights_initializer),
                ("biases", self.biases_initializer)]

    def _weight_shapes(self, cin):
        """The shapes of the weights for ``cin`` input channels."""
        kh, kw = self.kernel_size
        mult = self.depth_multiplier
        return {"depthwise_weights": (kh, kw, cin, mult),
                "pointwise_weights": (1, 1, cin * mult, self.num_outputs),
                "biases": (self.num_outputs or cin * mult,)}

    def _lazy_shape_mismatches(self, shapes, prefix=""):
        """Loaded shapes (``state_dict`` key -> shape) that lazy weights cannot take.

        A lazy module takes its input channels from what it loads; the kernel
        size, depth multiplier and outputs are its own arguments. Each message
        names the weight by ``prefix`` + its key, as torch's size mismatches do.
        """
        lazy = {key: tuple(shapes[key]) for key in ("depthwise_weights", "pointwise_weights", "biases")
                if key in shapes and getattr(self, key) is not None and is_lazy(getattr(self, key))}
        if not lazy:
            return []
        cin = self.in_channels
        if cin is None:  # what the loaded tensors imply (0 where none does: any shape then differs)
            mult = self.depth_multiplier
            depthwise, pointwise, biases = (lazy.get(key, ()) for key in
                                            ("depthwise_weights", "pointwise_weights", "biases"))
            cin = (depthwise[2] if len(depthwise) == 4 else pointwise[2] // mult if len(pointwise) == 4
                   else biases[0] // mult if len(biases) == 1 and self.num_outputs is None else 0)
        expected = self._weight_shapes(cin)
        return [f"{prefix}{key} of shape {list(shape)}, where kernel_size={self.kernel_size}, "
                f"depth_multiplier={self.depth_multiplier} and num_outputs={self.num_outputs} "
                f"need {list(expected[key])}" for key, shape in lazy.items() if shape != expected[key]]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        shapes = {key[len(prefix):]: value.shape for key, value in state_dict.items()
                  if key.startswith(prefix)}
        mismatches = self._lazy_shape_mismatches(shapes, prefix)
        if mismatches:  # before the lazy weights take any shape
            error_msgs.extend(f"Cannot load {m}." for m in mismatches)
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, inputs):
        """Applies the separable convolution, the normalizer and the activation.

        In eval mode a :class:`BatchNorm` normalizer is folded into the
        pointwise weights and bias (a lazy one from its second call, once its
        first has created its statistics), and a ReLU or ReLU6 activation runs
        in place on the GEMM output: the same function, one pass over the
        output instead of three. The normalizer is called, unfolded, where the
        fold could not stand in for its call: when it has an activation of its
        own, is a subclass of :class:`BatchNorm`, or has forward hooks or
        pre-hooks (its own or global ones).
        """
        x = utils.to_tensor(inputs)
        _check_input_channels(x, self.in_channels, self.data_format)
        if self._folds_normalizer():
            norm = self.normalizer
            epsilon = tf_batch_norm.kernel_epsilon(norm.epsilon, x.dtype, norm.fused)
            return self._epilogue_fused_forward(x, *ops.fold_batch_norm(
                self.pointwise_weights, self.biases, norm.moving_mean, norm.moving_variance,
                norm.beta, norm.gamma, epsilon))
        if self.normalizer is None:
            return self._epilogue_fused_forward(x, self.pointwise_weights, self.biases)
        outputs = ops.separable_conv2d(x, self.depthwise_weights, self.pointwise_weights,
                                       self.biases, stride=self.stride, rate=self.rate,
                                       padding=self.padding, data_format=self.data_format)
        outputs = self.normalizer(outputs)
        if self.activation_fn is not None:
            outputs = self.activation_fn(outputs)
        return outputs

    def _folds_normalizer(self):
        norm = self.normalizer
        # Folding skips the normalizer's call: only plain BatchNorm, whose forward the
        # fold reproduces, and only when no hook expects to see (or edit) that call.
        return (not self.training and type(norm) is BatchNorm and not norm.training
                and not _has_forward_hooks(norm)
                and norm.activation_fn is None and self.pointwise_weights is not None
                # A lazy normalizer has no statistics to fold until its first call;
                # one of another size raises its own error, unfolded.
                and norm.num_features == self.num_outputs
                # A normalizer of another dtype is left to type promotion, unfolded.
                and norm.moving_mean.dtype == self.pointwise_weights.dtype)

    def _epilogue_fused_forward(self, x, pointwise_weights, biases):
        """The layer with ReLU/ReLU6 applied in place by ops, other activations after."""
        fused = ops.fusable_activation(self.activation_fn)
        outputs = ops.separable_conv2d(x, self.depthwise_weights, pointwise_weights, biases,
                                       stride=self.stride, rate=self.rate, padding=self.padding,
                                       data_format=self.data_format, activation=fused)
        if self.activation_fn is not None and fused is None:
            outputs = self.activation_fn(outputs)
        return outputs

    def regularization_loss(self):
        """The sum of the weight and bias regularizers' losses (a 0 tensor if none apply).

        Lazy weights, which have no values yet, add nothing.
        """
        losses = []
        for tensor, regularizer in ((self.depthwise_weights, self.weights_regularizer),
                                    (self.pointwise_weights, self.weights_regularizer),
                                    (self.biases, self.biases_regularizer)):
            if tensor is not None and regularizer is not None and not is_lazy(tensor):
                loss = regularizer(tensor)
                if loss is not None:
                    losses.append(loss)
        if not losses:
            weights = self.depthwise_weights
            return torch.zeros((), dtype=weights.dtype, device=weights.device)
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
