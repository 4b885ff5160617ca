"""Helpers the modules share: parameters and buffers (lazy or not), filling them, input checks."""
import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, is_lazy

from .. import ops
from ..scope import call_initializer


class _Swappable:
    """A module whose tensors ``torch.utils.swap_tensors`` can swap after calls.

    It refuses tensors with weak references, which the weight cache holds
    (``ops.forget_cached``); a mixin before ``nn.Module``.
    """

    def _own_tensors(self):
        return [t for t in (*self._parameters.values(), *self._buffers.values()) if t is not None]

    def _apply(self, fn, recurse=True):
        ops.forget_cached(self._own_tensors())
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):
        ops.forget_cached(self._own_tensors())
        return super()._load_from_state_dict(*args, **kwargs)


def _channel_axis(data_format):
    return 3 if data_format == "NHWC" else 1


def _new_param(shape, lazy, trainable, factory):
    """A parameter of ``shape`` (uninitialised memory), or a lazy one when ``lazy``."""
    if lazy:
        return UninitializedParameter(requires_grad=trainable, **factory)
    return nn.Parameter(torch.empty(shape, **factory), requires_grad=trainable)


def _new_buffer(shape, lazy, factory):
    return UninitializedBuffer(**factory) if lazy else torch.empty(shape, **factory)


def _is_uninitialized(tensor):
    """``torch.nn.parameter.is_lazy``, in a form torch.compile traces without a graph break."""
    return isinstance(tensor, (UninitializedParameter, UninitializedBuffer))


def _fill_(module, initializers, lazy_shapes=None):
    """Fills the module's tensors ``[(key, initializer)]`` in place, as ``get_variable`` does.

    Without ``lazy_shapes`` the initialised tensors are filled; with it
    (``{key: shape}``) the lazy ones, materialised to those shapes. Every
    value is made and checked before any tensor is touched, so an initializer
    that fails leaves the module as it was (lazy tensors lazy).
    """
    plan = []
    for key, initializer in initializers:
        tensor = getattr(module, key)
        if tensor is None or is_lazy(tensor) != (lazy_shapes is not None):
            continue
        shape = tuple(tensor.shape) if lazy_shapes is None else tuple(lazy_shapes[key])
        plan.append((tensor, shape, call_initializer(initializer, shape, tensor.dtype, key)))
    with torch.no_grad():
        for tensor, shape, value in plan:
            if is_lazy(tensor):
                tensor.materialize(shape)
            tensor.copy_(value)


def _check_input_channels(x, expected, data_format):
    channels = x.shape[_channel_axis(data_format)]
    if channels != expected:
        raise ValueError(f"Invalid inputs shape {list(x.shape)}: expected {expected} channels "
                         f"on axis {_channel_axis(data_format)} ({data_format}), as the module's "
                         f"weights were made for.")


def _callable_name(fn):
    return getattr(fn, "__name__", None) or type(fn).__name__
