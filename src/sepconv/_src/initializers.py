"""Initializers with TF1's formulas: ``init(shape, dtype=None, partition_info=None)``.

Random initializers draw on the CPU from a ``torch.Generator`` seeded with
``seed`` when one is given (the same values on every call and every device),
else from torch's global generator, so ``torch.manual_seed`` makes them
deterministic. Values are then moved to the variable's device.
"""
import math
import numbers

import numpy as np
import torch

from .utils import as_dtype, check_seed

__all__ = ["constant_initializer", "glorot_uniform_initializer", "ones_initializer",
           "random_normal_initializer", "random_uniform_initializer",
           "truncated_normal_initializer", "variance_scaling_initializer",
           "xavier_initializer", "zeros_initializer"]

_MODES = ("FAN_IN", "FAN_OUT", "FAN_AVG")


def _check_real(value, argument, minimum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {argument} {value!r}: expected a real number.")
    if minimum is not None and value < minimum:
        raise ValueError(f"Invalid {argument} {value!r}: must be >= {minimum}.")
    return float(value)




def _check_shape(shape):
    """The shape an initializer is called with: a sequence of non-negative ints."""
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"Invalid shape {shape!r}: expected a list of non-negative ints.")
    dims = list(shape)
    for dim in dims:
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 0:
            raise ValueError(f"Invalid shape {shape!r}: dimensions must be non-negative ints, "
                             f"got {dim!r}.")
    return [int(dim) for dim in dims]


def _float_dtype(dtype, default):
    dtype = default if dtype is None else dtype
    dtype = as_dtype(dtype)
    if not dtype.is_floating_point:
        raise TypeError(f"Cannot create initializer for non-floating point type {dtype}: "
                        "invalid dtype, expected float16, bfloat16, float32 or float64.")
    return dtype


class _Initializer:
    """Base: subclasses implement ``_generate(shape, dtype, generator)``."""

    def __init__(self, seed=None, dtype=torch.float32):
        self.seed = check_seed(seed)
        # Checked now, as TF does, so a bad dtype fails where it was written.
        self.dtype = torch.float32
        self.dtype = self._dtype(dtype)

    def __call__(self, shape, dtype=None, partition_info=None):
        """A new tensor of ``shape``.

        Args:
            shape: a list of non-negative ints.
            dtype: the tensor's dtype; None takes the one given at construction.
            partition_info: TF's partitioning argument (ignored).

        Returns:
            A ``torch.Tensor`` of ``shape`` and ``dtype`` (not requiring grad).

        Raises:
            ValueError: if ``shape`` is not a list of non-negative ints.
            TypeError: if ``dtype`` is not one the initializer can fill.
        """
        del partition_info
        shape = _check_shape(shape)
        dtype = self._dtype(dtype)
        generator = None
        if self.seed is not None:
            generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            return self._generate(shape, dtype, generator)

    def _dtype(self, dtype):
        return _float_dtype(dtype, self.dtype)

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class zeros_initializer(_Initializer):
    """Fills with zeros.

    Args:
        dtype: the default dtype of the tensors it makes (any dtype).

    Raises:
        TypeError: if ``dtype`` is not a dtype.
    """

    def __init__(self, dtype=torch.float32):
        super().__init__(None, dtype)

    def _dtype(self, dtype):
        return as_dtype(dtype if dtype is not None else self.dtype)

    def _generate(self, shape, dtype, generator):
        return torch.zeros(shape, dtype=dtype)


class ones_initializer(zeros_initializer):
    """Fills with ones; arguments as :class:`zeros_initializer`."""

    def _generate(self, shape, dtype, generator):
        return torch.ones(shape, dtype=dtype)


class constant_initializer(zeros_initializer):
    """Fills with ``value``: a scalar, or an array reshaped to the variable's shape.

    As in TF1, an array with fewer elements than the shape is padded with its
    last element.

    Args:
        value: a number, or an array (list, numpy array, tensor) of numbers.
        dtype: the default dtype of the tensors it makes.
        verify_shape: require ``value``'s shape to be the tensor's.

    Raises:
        TypeError: at construction if ``value`` holds no numbers; when called,
            if ``verify_shape`` and the shapes differ, or a fractional value
            would be truncated into an integer dtype.
        ValueError: when called, if ``value`` has more elements than the shape.
    """

    def __init__(self, value=0, dtype=torch.float32, verify_shape=False):
        super().__init__(dtype)
        array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"Invalid value {value!r} for constant_initializer: expected numbers.")
        self.value = array
        self.verify_shape = verify_shape

    def _generate(self, shape, dtype, generator):
        flat = self.value.reshape(-1)
        count = int(np.prod(shape, dtype=np.int64))
        if self.verify_shape and list(self.value.shape) != shape:
            raise TypeError(f"Expected Tensor's shape: {shape}, got {list(self.value.shape)}.")
        if flat.size > count and flat.size != 1:
            raise ValueError(f"Too many elements provided. Needed at most {count}, but received {flat.size}")
        if flat.size == 1:
            filled = np.full(count, flat[0])
        else:
            filled = np.concatenate([flat, np.repeat(flat[-1:], count - flat.size)])
        if not (dtype.is_floating_point or dtype.is_complex) and filled.dtype.kind in "fc":
            fractional = filled[filled != np.trunc(filled.real)]
            if fractional.size:  # TF refuses to truncate a value into an integer variable
                value = fractional[0].item()
                raise TypeError(f"Expected {dtype}, but got {value!r} of type "
                                f"'{type(value).__name__}'.")
        return torch.from_numpy(filled.reshape(shape).copy()).to(dtype)


class random_uniform_initializer(_Initializer):
    """Uniform in ``[minval, maxval)``; ``maxval=None`` means 1.

    Args:
        minval, maxval: the bounds (numbers).
        seed: an int making the draws repeatable, or None.
        dtype: the default dtype, a floating-point one.

    Raises:
        ValueError: if ``maxval < minval``.
        TypeError: if a bound or the seed is not a number, or ``dtype`` is
            not floating-point.
    """

    def __init__(self, minval=0, maxval=None, seed=None, dtype=torch.float32):
        super().__init__(seed, dtype)
        self.minval = _check_real(minval, "minval")
        self.maxval = 1.0 if maxval is None else _check_real(maxval, "maxval")
        if self.maxval < self.minval:
            raise ValueError(f"Invalid maxval {maxval!r}: must be >= minval {minval!r}.")

    def _generate(self, shape, dtype, generator):
        out = torch.empty(shape, dtype=dtype)
        return out.uniform_(self.minval, self.maxval, generator=generator)


class random_normal_initializer(_Initializer):
    """Normal with ``mean`` and ``stddev``.

    Args:
        mean: a number.
        stddev: a number >= 0.
        seed: an int making the draws repeatable, or None.
        dtype: the default dtype, a floating-point one.

    Raises:
        ValueError: if ``stddev`` is negative.
        TypeError: if an argument is not a number, or ``dtype`` is not
            floating-point.
    """

    def __init__(self, mean=0.0, stddev=1.0, seed=None, dtype=torch.float32):
        super().__init__(seed, dtype)
        self.mean = _check_real(mean, "mean")
        self.stddev = _check_real(stddev, "stddev", minimum=0.0)

    def _generate(self, shape, dtype, generator):
        return torch.empty(shape, dtype=dtype).normal_(self.mean, self.stddev, generator=generator)


class truncated_normal_initializer(random_normal_initializer):
    """Normal with values beyond two standard deviations redrawn, as TF's.

    Arguments and errors as :class:`random_normal_initializer`.
    """

    def _generate(self, shape, dtype, generator):
        out = torch.empty(shape, dtype=dtype)
        low, high = self.mean - 2 * self.stddev, self.mean + 2 * self.stddev
        return torch.nn.init.trunc_normal_(out, self.mean, self.stddev, low, high, generator=generator)


def _fans(shape):
    """contrib's fans: the last two dims are (in, out), times the receptive field."""
    if not shape:
        return 1.0, 1.0
    fan_in = float(shape[-2]) if len(shape) > 1 else float(shape[-1])
    fan_out = float(shape[-1])
    receptive_field = float(np.prod(shape[:-2])) if len(shape) > 2 else 1.0
    return fan_in * receptive_field, fan_out * receptive_field


class variance_scaling_initializer(_Initializer):
    """contrib's variance scaling: variance ``factor / n``, n from ``mode``.

    Uniform draws use limit ``sqrt(3 * factor / n)``; normal draws are
    truncated normal with stddev ``sqrt(1.3 * factor / n)``.

    Args:
        factor: a number >= 0.
        mode: ``'FAN_IN'``, ``'FAN_OUT'`` or ``'FAN_AVG'``.
        uniform: uniform draws if True, truncated normal otherwise.
        seed: an int making the draws repeatable, or None.
        dtype: the default dtype, a floating-point one.

    Raises:
        TypeError: if ``mode`` is unknown, ``uniform`` not a bool, an
            argument not a number, or ``dtype`` not floating-point.
        ValueError: if ``factor`` is negative.
    """

    def __init__(self, factor=2.0, mode="FAN_IN", uniform=False, seed=None, dtype=torch.float32):
        super().__init__(seed, _float_dtype(dtype, torch.float32))
        if mode not in _MODES:
            raise TypeError(f"Unknown mode {mode!r}, should be one of {list(_MODES)}")
        if not isinstance(uniform, bool):
            raise TypeError(f"Invalid uniform {uniform!r}: expected a bool.")
        self.factor = _check_real(factor, "factor", minimum=0.0)
        self.mode = mode
        self.uniform = uniform

    def _generate(self, shape, dtype, generator):
        fan_in, fan_out = _fans(shape)
        n = {"FAN_IN": fan_in, "FAN_OUT": fan_out, "FAN_AVG": (fan_in + fan_out) / 2.0}[self.mode]
        n = max(n, 1.0)  # a zero-size dimension would divide by zero; TF 2 clamps the same way
        out = torch.empty(shape, dtype=dtype)
        if self.uniform:
            limit = math.sqrt(3.0 * self.factor / n)
            return out.uniform_(-limit, limit, generator=generator)
        stddev = math.sqrt(1.3 * self.factor / n)
        return torch.nn.init.trunc_normal_(out, 0.0, stddev, -2 * stddev, 2 * stddev, generator=generator)


def xavier_initializer(uniform=True, seed=None, dtype=torch.float32):
    """Glorot/Xavier: uniform limit ``sqrt(6 / (fan_in + fan_out))``.

    Fans include the receptive field: ``[kh, kw, cin, m]`` has
    ``fan_in = kh*kw*cin`` and ``fan_out = kh*kw*m``.

    Args:
        uniform: uniform draws if True, else truncated normal with stddev
            ``sqrt(1.3 * 2 / (fan_in + fan_out))``.
        seed: an int making the draws repeatable, or None.
        dtype: the default dtype, a floating-point one.

    Returns:
        A :class:`variance_scaling_initializer` (factor 1, ``'FAN_AVG'``).

    Example:
        >>> import sepconv as sc
        >>> w = sc.xavier_initializer(seed=1)([3, 3, 8, 1])
        >>> bool(w.abs().max() <= (6 / (9 * 8 + 9 * 1)) ** 0.5)
        True
    """
    return variance_scaling_initializer(1.0, "FAN_AVG", uniform, seed, dtype)


def glorot_uniform_initializer(seed=None, dtype=torch.float32):
    """TF1's default initializer for float variables: uniform Xavier.

    Args:
        seed: an int making the draws repeatable, or None.
        dtype: the default dtype, a floating-point one.

    Returns:
        ``xavier_initializer(True, seed, dtype)``.
    """
    return xavier_initializer(True, seed, dtype)
