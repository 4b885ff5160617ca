"""Argument normalisation shared by the layers and the modules.

Each helper knows the name of the argument it checks, so its error names the
argument, the bad value and what is allowed.
"""
import numbers

import numpy as np
import torch

DATA_FORMATS = ("NHWC", "NCHW")
PADDINGS = ("SAME", "VALID")


def as_dtype(dtype, argument="dtype"):
    """A ``torch.dtype`` from a torch dtype, a numpy dtype or a name like ``'float32'``."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype):
        return getattr(torch, dtype)
    try:
        return torch.from_numpy(np.zeros((), dtype=np.dtype(dtype))).dtype
    except TypeError:
        raise TypeError(f"Invalid {argument} {dtype!r}: expected a torch.dtype, a numpy dtype "
                        "or a name like 'float32'.") from None


def floating_dtype(dtype, argument="dtype"):
    """:func:`as_dtype` for a module's parameters: None or a floating-point dtype."""
    dtype = as_dtype(dtype, argument)
    if dtype is not None and not dtype.is_floating_point:
        raise TypeError(f"Invalid {argument} {dtype}: expected a floating-point dtype "
                        "(float16, bfloat16, float32 or float64) or None.")
    return dtype


def positive_int(value, argument, minimum=1):
    """``value`` as an int >= ``minimum``; bools and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Invalid {argument} {value!r}: expected an int >= {minimum}.")
    if value < minimum:
        raise ValueError(f"Invalid {argument} {value!r}: expected an int >= {minimum}.")
    return int(value)


def pair(value, argument, minimum=1):
    """An int or a pair of ints, each >= ``minimum``, as a 2-tuple (like torch's ``_pair``).

    Numpy integers and integer arrays (0-d or of length 2) count as ints;
    floats and bools are refused, not truncated.
    """
    if isinstance(value, np.ndarray):
        value = value.tolist()  # Python ints or floats (refused below), a scalar for a 0-d array
    if isinstance(value, (list, tuple)):  # torch.Size is a tuple
        if len(value) != 2:
            raise ValueError(f"Invalid {argument} {value!r}: expected an int or a list of "
                             f"length 2, got length {len(value)}.")
        return tuple(positive_int(v, argument, minimum) for v in value)
    return (positive_int(value, argument, minimum),) * 2


def padding_mode(padding):
    """``'SAME'`` or ``'VALID'`` from any capitalisation."""
    if not isinstance(padding, str) or padding.upper() not in PADDINGS:
        raise ValueError(f"Invalid padding string {padding!r}, should be one of {list(PADDINGS)} "
                         "(case-insensitive).")
    return padding.upper()


def data_format(value):
    """Checks ``data_format`` with TF's message."""
    if value not in DATA_FORMATS:
        raise ValueError(f"data_format has to be either NCHW or NHWC, got {value!r}.")
    return value


def check_device(device):
    """``device`` as a ``torch.device`` (None stays None)."""
    if device is None:
        return None
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"Invalid device {device!r}: expected a torch.device or a device "
                         "string like 'cpu' or 'cuda:0'.") from None


def check_collection_names(names, argument):
    """Collection names are dictionary keys: each must be hashable."""
    for name in names:
        try:
            hash(name)
        except TypeError:
            raise TypeError(f"Invalid {argument} {names!r}: collection names must be hashable, "
                            f"got {name!r}.") from None


def check_callable(value, argument, allow_none=True):
    """Checks that ``value`` is callable (or None when allowed)."""
    if value is None and allow_none:
        return None
    if not callable(value):
        raise TypeError(f"Invalid {argument} {value!r}: expected a callable"
                        f"{' or None' if allow_none else ''}.")
    return value


def check_bool(value, argument):
    """Checks that ``value`` is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"Invalid {argument} {value!r}: expected a bool.")
    return value


def check_flag(value, argument):
    """``value`` as a bool, from a bool, a numpy bool or the int 0 or 1.

    For the flags TF hands to ``tf.cond`` (``is_training``) or stores
    (``trainable``): TF code passes ``np.bool_`` and 0/1 for them. Other ints,
    strings and None are refused rather than read by truthiness.
    """
    if not _is_flag(value):
        raise TypeError(f"Invalid {argument} {value!r}: expected a bool (True or False, a numpy "
                        "bool, or the int 1 or 0).")
    return bool(value)


def _is_flag(value):
    """What ``tf.cond`` takes as a Python predicate: a bool or 1/0 (numpy's included)."""
    if isinstance(value, (bool, np.bool_)):
        return True
    return isinstance(value, numbers.Integral) and value in (0, 1)


def to_tensor(inputs, argument="inputs", min_rank=4, max_rank=4, floating=True):
    """A floating-point torch tensor from a tensor or an array, of rank in ``[min_rank, max_rank]``.

    ``max_rank=None`` accepts any rank from ``min_rank`` up; ``floating=False``
    accepts any dtype (for layers that only move values, such as ``flatten``).
    """
    if isinstance(inputs, torch.Tensor):
        tensor = inputs
    elif isinstance(inputs, np.ndarray) or (hasattr(inputs, "__array__") and not isinstance(inputs, (str, bytes))):
        tensor = _array_to_tensor(inputs, argument, floating)
    else:
        raise TypeError(f"Invalid {argument} of type {type(inputs).__name__}: expected a "
                        "torch.Tensor or a numpy array.")
    if floating and not tensor.dtype.is_floating_point:
        raise TypeError(f"Invalid {argument} dtype {tensor.dtype}: expected a floating-point "
                        "tensor (float16, bfloat16, float32 or float64).")
    if tensor.dim() < min_rank or (max_rank is not None and tensor.dim() > max_rank):
        expected = (f"a {min_rank}-D tensor" if min_rank == max_rank
                    else f"rank >= {min_rank}" if max_rank is None
                    else f"rank in [{min_rank}, {max_rank}]")
        raise ValueError(f"Invalid {argument} rank {tensor.dim()} (shape {list(tensor.shape)}): "
                         f"expected {expected}.")
    return tensor


def check_seed(seed):
    """An int seed in the range torch's generators take, or None."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"Invalid seed {seed!r}: expected an int or None.")
    if seed is not None and not -2**63 <= seed <= 2**64 - 1:
        raise ValueError(f"Invalid seed {seed!r}: expected an int in [-2**63, 2**64 - 1] or None.")
    return seed


def check_fraction(value, argument, low, high, high_inclusive):
    """A float in ``[low, high]`` (or ``[low, high)``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {argument} {value!r}: expected a float.")
    if not (low <= value and (value <= high if high_inclusive else value < high)):
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"Invalid {argument} {value!r}: must be in [{low}, {high}{bracket}.")
    return float(value)


def check_callable_values(params, argument):
    """Checks that every value of the dict ``params`` is callable, naming the key of one that is not."""
    for key, value in params.items():
        if not callable(value):
            raise TypeError(f"Invalid {argument}[{key!r}] {value!r}: expected a callable.")
    return params


def check_params(params, argument, allowed=None):
    """A dict of keyword arguments (None gives ``{}``), with keys among ``allowed`` if given."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise TypeError(f"Invalid {argument} {params!r}: expected a dict or None.")
    if allowed is not None:
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ValueError(f"Invalid {argument} keys {unknown}, should be among {sorted(allowed)}.")
    return params


def check_training(is_training):
    """``is_training`` as a bool, from what :func:`check_flag` takes or a scalar bool/int tensor."""
    if isinstance(is_training, torch.Tensor):
        if is_training.numel() == 1 and not is_training.dtype.is_floating_point:
            return bool(is_training)
    elif _is_flag(is_training):
        return bool(is_training)
    raise TypeError(f"Invalid is_training {is_training!r}: expected a bool, a numpy bool, the int "
                    "1 or 0, or a scalar bool tensor.")


def _array_to_tensor(inputs, argument, floating=True):
    array = np.asarray(inputs)
    try:
        return torch.from_numpy(np.ascontiguousarray(array))
    except TypeError:  # object, string, datetime and long-double arrays have no tensor dtype
        expected = ("a floating-point array (float16, float32 or float64)" if floating
                    else "a numeric or bool array")
        raise TypeError(f"Invalid {argument} array dtype {array.dtype}: expected {expected}.") from None
