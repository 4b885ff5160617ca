"""Large CPU buffers for the layer's outputs: huge pages and recycling.

glibc serves allocations above 32 MB (its largest mmap threshold) with a
fresh mmap, and each first touch of a 4 KiB page then faults: measured 31 ms
to fill a fresh 51 MB tensor against 4.5 ms for memory already mapped. With
transparent huge pages advised, the same fill takes 3.6-6.9 ms (one fault per
2 MiB), and 17 ms at 2 threads where huge pages are not granted. In the
benchmark harness, calls of 16x112x112x32 -> 64 swung between 14 and 60 ms
with fresh outputs, and stayed at 10-12 ms with recycled ones (2 threads).

So buffers this large are also recycled, as ONNX Runtime's arena and
PyTorch's CUDA caching allocator do: the pool keeps the most recent ones
(``POOL_MAX_BYTES`` in all) and hands one out again only once nothing else
holds its storage (its storage's use count shows only the pool's own
reference). A tensor handed out is a fresh tensor on that storage (never a
view), so autograd and in-place ops treat it as any new tensor.
"""
import ctypes
import math
import sys
import threading

import torch

LARGE_BYTES = 32 << 20
POOL_MAX_BYTES = 256 << 20
_MADV_HUGEPAGE = 14
_HUGE = 1 << 21

# Without the storage use count (a private torch API) nothing is recycled.
_CAN_COUNT_USES = hasattr(torch._C, "_storage_Use_Count")
_lock = threading.Lock()
_pool = []  # flat tensors, oldest first
_madvise = None


def large_empty(shape, like, min_bytes=None):
    """``like.new_empty(shape)``; from a recycled, huge-page-advised buffer when large.

    ``min_bytes`` (default ``LARGE_BYTES``) is the size from which the pool serves.

    Example:
        >>> large_empty((2, 3), torch.ones(1, dtype=torch.float64)).dtype
        torch.float64
    """
    numel = math.prod(shape)
    if not is_large(numel, like, min_bytes):
        return like.new_empty(shape)
    if not _CAN_COUNT_USES:
        return _fresh(like, numel).view(shape)
    with _lock:
        flat = _take(like.dtype, numel)
        if flat is None:
            flat = _fresh(like, numel)
        # Handed out before the lock is released: from here on its use count
        # shows it busy to every other thread.
        out = like.new_empty(0).set_(flat.untyped_storage(), 0, shape)
        _keep(flat)
    return out


def is_large(numel, like, min_bytes=None):
    """Whether ``numel`` elements of ``like``'s dtype and device come from the pool."""
    threshold = LARGE_BYTES if min_bytes is None else min_bytes
    return numel * like.element_size() >= threshold and like.device.type == "cpu"


def release():
    """Drops every pooled buffer (buffers still in use stay with their users)."""
    with _lock:
        _pool.clear()


def pooled_bytes():
    """The bytes the pool holds, in use or not."""
    with _lock:
        return sum(_nbytes(flat) for flat in _pool)


def _fresh(like, numel):
    flat = like.new_empty(numel)
    _advise_hugepages(flat.data_ptr(), numel * flat.element_size())
    return flat


def _take(dtype, numel):
    for index, flat in enumerate(_pool):
        if (flat.dtype == dtype and flat.numel() == numel and _nbytes(flat) == _storage_bytes(flat)
                and _unused(flat)):
            return _pool.pop(index)  # large_empty puts it back as the newest
    return None


def _keep(flat):
    _pool.append(flat)
    while sum(_nbytes(f) for f in _pool) > POOL_MAX_BYTES:
        _pool.pop(0)


def _nbytes(flat):
    return flat.numel() * flat.element_size()


def _storage_bytes(flat):
    # A user may resize the storage of a tensor handed out; such a buffer is not reused.
    return flat.untyped_storage().nbytes()


def _python_refs_of_an_unused_storage():
    tensor = torch.empty(1)
    storage = tensor.untyped_storage()  # as _unused holds it
    return sys.getrefcount(storage)


# A Python storage object is one object per storage, so a caller holding
# ``y.untyped_storage()`` after ``del y`` shares the pool's: its Python
# reference count tells, where the use count does not.
_UNUSED_STORAGE_REFS = _python_refs_of_an_unused_storage()


def _unused(flat):
    storage = flat.untyped_storage()
    # Two uses: the pool's tensor and ``storage`` itself. Every tensor handed
    # out, every view of one, autograd's saved tensors and numpy arrays sharing
    # the memory add one each.
    return (torch._C._storage_Use_Count(storage._cdata) == 2
            and sys.getrefcount(storage) == _UNUSED_STORAGE_REFS)


def _advise_hugepages(pointer, nbytes):
    global _madvise
    if _madvise is None:
        _madvise = _load_madvise()
    start = (pointer + _HUGE - 1) & ~(_HUGE - 1)
    end = (pointer + nbytes) & ~(_HUGE - 1)
    if _madvise and end > start:
        _madvise(start, end - start, _MADV_HUGEPAGE)  # advisory: a failure changes nothing


def _load_madvise():
    if not sys.platform.startswith("linux"):
        return False
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return False
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise
