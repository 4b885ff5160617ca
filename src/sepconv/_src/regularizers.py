"""contrib's regularizers, and losses that are evaluated when they are read.

A TF graph re-evaluates a regularization-loss tensor every step. Here the
``REGULARIZATION_LOSSES`` collection holds :class:`RegularizationLoss`
entries that compute the penalty from the variable's current value each time
they are read, so a training loop never adds a stale penalty.
"""
import logging
import numbers

import torch

from . import graph as graph_lib
from .graph import GraphKeys

__all__ = ["RegularizationLoss", "get_regularization_loss", "get_regularization_losses",
           "l1_l2_regularizer", "l1_regularizer", "l2_regularizer", "sum_regularizer"]

_LOG = logging.getLogger("sepconv")


def _check_scale(scale, argument="scale"):
    if isinstance(scale, numbers.Integral):  # bool is Integral too, as in TF
        raise ValueError(f"{argument} cannot be an integer: {scale!r}")
    if not isinstance(scale, numbers.Real):
        raise TypeError(f"Invalid {argument} {scale!r}: expected a float.")
    if scale < 0.0:
        raise ValueError(f"Setting a scale less than 0 on a regularizer: {scale!r}")
    return float(scale)


def _disabled(_):
    return None


class _ScaledPenalty:
    """A regularizer of one scale; a class, not a closure, so modules holding it pickle."""

    def __init__(self, scale, scope):
        self.scale = scale
        self.scope = scope  # TF's name scope of the loss op; kept for repr only

    def __repr__(self):
        return f"{self._tf_name}(scale={self.scale!r})"


class _L1(_ScaledPenalty):
    _tf_name = "l1_regularizer"

    def __call__(self, weights):
        return weights.abs().sum() * self.scale


class _L2(_ScaledPenalty):
    _tf_name = "l2_regularizer"

    def __call__(self, weights):
        return weights.square().sum() * (self.scale / 2.0)


class _Sum:
    """The sum of the penalties of ``regularizers`` that give one (None if none does)."""

    def __init__(self, regularizers, scope):
        self.regularizers = regularizers
        self.scope = scope

    def __call__(self, weights):
        penalties = [p for p in (reg(weights) for reg in self.regularizers) if p is not None]
        return sum(penalties[1:], penalties[0]) if penalties else None

    def __repr__(self):
        return f"sum_regularizer({self.regularizers!r})"


def l1_regularizer(scale, scope=None):
    """``scale * sum(|w|)``. A scale of 0 returns a regularizer that adds nothing.

    Args:
        scale: a float >= 0.
        scope: the name scope TF gave the loss op (kept for compatibility).

    Returns:
        A function ``weights -> scalar tensor`` (or ``-> None`` for scale 0).

    Raises:
        ValueError: if ``scale`` is an integer or negative.
        TypeError: if ``scale`` is not a number.
    """
    return _scaled(_L1, scale, scope)


def l2_regularizer(scale, scope=None):
    """``scale * sum(w**2) / 2``, TF's ``l2_loss`` scaled.

    Args, Returns and Raises as :func:`l1_regularizer`.

    Example:
        >>> import sepconv as sc, torch
        >>> float(sc.l2_regularizer(0.5)(torch.tensor([1.0, 2.0])))
        1.25
    """
    return _scaled(_L2, scale, scope)


def _scaled(penalty, scale, scope):
    """``penalty(scale, scope)``, or a regularizer adding nothing for a scale of 0, as TF."""
    scale = _check_scale(scale)
    if scale == 0.0:
        _LOG.info("Scale of 0 disables regularizer.")
        return _disabled
    return penalty(scale, scope)


def sum_regularizer(regularizer_list, scope=None):
    """Sums the penalties of ``regularizer_list``.

    Args:
        regularizer_list: regularizers (``None`` entries are skipped).
        scope: the name scope TF gave the loss op (kept for compatibility).

    Returns:
        A regularizer giving the sum of the penalties that are not None (None
        if none is), or None when the list holds no regularizer.

    Raises:
        TypeError: if ``regularizer_list`` is not a list or holds a
            non-callable.
    """
    if isinstance(regularizer_list, (str, bytes)) or not hasattr(regularizer_list, "__iter__"):
        raise TypeError(f"Invalid regularizer_list {regularizer_list!r}: expected a list of "
                        "regularizers.")
    regularizers = [reg for reg in regularizer_list if reg is not None]
    for reg in regularizers:
        if not callable(reg):
            raise TypeError(f"Invalid regularizer {reg!r} in regularizer_list: expected a callable.")
    if not regularizers:
        return None
    return _Sum(regularizers, scope)


def l1_l2_regularizer(scale_l1=1.0, scale_l2=1.0, scope=None):
    """``l1(scale_l1) + l2(scale_l2)``, dropping a term whose scale is 0.

    Args:
        scale_l1, scale_l2: floats >= 0.
        scope: the name scope TF gave the loss op (kept for compatibility).

    Returns:
        A function ``weights -> scalar tensor``.

    Raises:
        ValueError: if a scale is an integer or negative.
        TypeError: if a scale is not a number.
    """
    for value, argument in ((scale_l1, "scale_l1"), (scale_l2, "scale_l2")):
        if isinstance(value, numbers.Integral):
            raise ValueError(f"{argument} cannot be an integer: {value!r}")
    scale_l1 = _check_scale(scale_l1, "scale_l1")
    scale_l2 = _check_scale(scale_l2, "scale_l2")
    if scale_l1 == 0.0:
        return l2_regularizer(scale_l2, scope)
    if scale_l2 == 0.0:
        return l1_regularizer(scale_l1, scope)
    return sum_regularizer([l1_regularizer(scale_l1), l2_regularizer(scale_l2)], scope)


class RegularizationLoss:
    """A penalty on one variable, computed from its current value when read.

    It adds like a tensor (``loss + x``, ``sum(losses)``), so TF-style code
    that sums the collection keeps working.
    """

    def __init__(self, name, variable, regularizer):
        self.name = name
        self.variable = variable
        self.regularizer = regularizer

    def value(self):
        """The penalty for the variable's current value (None if disabled)."""
        return self.regularizer(self.variable)

    __call__ = value

    def __add__(self, other):
        return self.value() + (other.value() if isinstance(other, RegularizationLoss) else other)

    __radd__ = __add__

    def __repr__(self):
        return f"<RegularizationLoss {self.name!r}>"


def get_regularization_losses(scope=None):
    """Evaluates the default graph's regularization losses now.

    Args:
        scope: optional regex filtering the losses by name (``re.match``).

    Returns:
        A list of scalar tensors, one per regularized variable, from the
        variables' current values.
    """
    entries = graph_lib.get_collection(GraphKeys.REGULARIZATION_LOSSES, scope)
    return [entry.value() if isinstance(entry, RegularizationLoss) else entry for entry in entries]


def get_regularization_loss(scope=None, name="total_regularization_loss"):
    """The sum of :func:`get_regularization_losses`, or a 0.0 tensor when there are none.

    Args:
        scope: optional regex filtering the losses by name (``re.match``).
        name: TF's name of the sum op (unused).

    Returns:
        A scalar tensor, from the variables' current values.
    """
    del name
    losses = get_regularization_losses(scope)
    if not losses:
        return torch.tensor(0.0)
    return torch.stack([torch.as_tensor(loss) for loss in losses]).sum()
