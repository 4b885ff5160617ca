"""The fused kernel (``kernels.cpp``), compiled on first use.

The kernel runs the separable layer's forward in one pass: depthwise (depth
multiplier 1) into a cache-resident tile, then the pointwise GEMM on
pre-packed weights with bias and activation applied in its store. Its
backward computes a training step's four gradients image by image, with
the depthwise output recomputed and every intermediate in cache.
It is a C++ file with no Python binding: it is compiled with the machine's
C++ compiler against the installed PyTorch (its headers, and its thread
pool, so ``torch.set_num_threads`` governs it), cached under
``$SEPCONV_CACHE_DIR`` (default ``~/.cache/sepconv``; the temporary
directory if that cannot be written), and called through
``ctypes``, which releases the GIL for the call.

Without a compiler, on a CPU without AVX2 and FMA, off x86-64, with a
PyTorch whose thread pool is not OpenMP, or with ``SEPCONV_NATIVE=0``,
:func:`load` returns None and :func:`status` says why: the layer then runs
its PyTorch path, which computes the same numbers (both are tested against
the same float64 reference).
"""
import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels.cpp")
# The C++ side's limit on kernel taps (kMaxTaps).
MAX_TAPS = 64
ACTIVATIONS = {None: 0, "relu": 1, "relu6": 2}

_lock = threading.Lock()
_loaded = {}


def cache_dir():
    """Where compiled kernels are kept: ``$SEPCONV_CACHE_DIR``, else ``~/.cache/sepconv``."""
    configured = os.environ.get("SEPCONV_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sepconv"


def _compile_command(output):
    torch_dir = Path(torch.__file__).parent
    return [os.environ.get("CXX", "g++"), "-O3", "-std=c++17", "-fopenmp", "-shared", "-fPIC",
            f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
            f"-I{torch_dir / 'include'}", str(SOURCE), f"-L{torch_dir / 'lib'}",
            "-ltorch_cpu", "-lc10", f"-Wl,-rpath,{torch_dir / 'lib'}", "-o", str(output)]


def _library_path():
    """The cached library's path: a digest of the source, the command and torch's version."""
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(" ".join(_compile_command("")).encode())
    digest.update(torch.__version__.encode())
    return cache_dir() / f"sepconv-kernels-{digest.hexdigest()[:16]}.so"


def _writable(path):
    """``path``, or the same name in the temporary directory if its folder cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.access(path.parent, os.W_OK):
            return path
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"sepconv-{os.getuid()}"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback / path.name


def _compile(path):
    # Compiled beside its final name, then renamed: a concurrent process sees
    # either no library or a whole one.
    fd, partial = tempfile.mkstemp(suffix=".so.tmp", dir=path.parent)
    os.close(fd)
    try:
        subprocess.run(_compile_command(partial), check=True, capture_output=True, text=True)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _unavailable_reason():
    if os.environ.get("SEPCONV_NATIVE", "1") == "0":
        return "disabled by SEPCONV_NATIVE=0"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"no kernel for {platform.machine()} (x86-64 only)"
    if "OpenMP" not in torch.__config__.parallel_info():
        return "this PyTorch's thread pool is not OpenMP"
    return None


def _load():
    reason = _unavailable_reason()
    if reason is not None:
        return None, reason
    path = _writable(_library_path())
    try:
        if not path.exists():
            _compile(path)
        library = ctypes.CDLL(str(path))
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", None) or str(error)
        return None, f"compiling {SOURCE.name} failed: {detail.strip()[-500:]}"
    if not library.sepconv_native_supported():
        return None, "this CPU lacks AVX2 or FMA"
    library.sepconv_separable_forward.restype = ctypes.c_int
    library.sepconv_separable_forward.argtypes = [ctypes.c_void_p] * 6
    library.sepconv_separable_backward.restype = ctypes.c_int
    library.sepconv_separable_backward.argtypes = [ctypes.c_void_p] * 10
    library.sepconv_fingerprint.restype = ctypes.c_uint64
    library.sepconv_fingerprint.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    library.sepconv_pack_panels.restype = None
    library.sepconv_pack_panels.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                            ctypes.c_int, ctypes.c_void_p]
    return library, f"compiled kernel {path}"


def load():
    """The compiled kernel library, or None (then :func:`status` says why)."""
    if "library" in _loaded:  # settled once: no lock on the per-call path
        return _loaded["library"]
    with _lock:
        if "library" not in _loaded:
            library, message = _load()
            _loaded["status"] = message
            _loaded["library"] = library  # last: its presence means both are set
        return _loaded["library"]


def status():
    """A line saying whether the kernel is in use, and why not if it is not."""
    load()
    return _loaded["status"]


def fingerprint(tensor):
    """A sampled fingerprint of a CPU tensor's memory, or None (another device, or no elements).

    64 evenly spaced words of the memory the tensor spans, mixed: a write that
    rewrites every element (an optimizer step, ``w.data.mul_(2)``) changes it.
    """
    # Cheap attribute calls only: this runs for every weight of every inference call.
    nbytes = tensor.nbytes
    if not tensor.is_cpu or nbytes == 0:
        return None
    if not tensor.is_contiguous():
        nbytes = tensor.element_size() * (1 + sum(
            (size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride())))
    library = load()
    if library is not None:
        return library.sepconv_fingerprint(tensor.data_ptr(), nbytes)
    # The same words as the compiled sepconv_fingerprint samples, read by one
    # strided slice of a ctypes view (no copy of the rest).
    address = tensor.data_ptr()
    if nbytes < 8:
        return hash(ctypes.string_at(address, nbytes))
    words = nbytes // 8
    sampled = (ctypes.c_uint64 * words).from_address(address)[::max(1, words // 64)]
    return hash((*sampled, ctypes.string_at(address + nbytes - 8, 8)))


def pack_pointwise(library, matrix, transposed=False, allocate=None):
    """The kernels' weight panels of a ``[K, N]`` pointwise matrix, or of its transpose.

    Args:
        library: from :func:`load`.
        matrix: float32 ``[K, N]``.
        transposed: pack ``matrix.T`` (the backward's operand) instead.
        allocate: called with the panels' shape for the tensor to write them
            to; default ``matrix.new_empty``.

    Returns:
        ``[ceil(N / 16), K, 16]`` (transposed: ``[ceil(K / 16), N, 16]``),
        columns past the matrix's zero.
    """
    matrix = matrix.detach().contiguous()
    depth, width = matrix.shape[::-1] if transposed else matrix.shape
    shape = (-(-width // 16), depth, 16)
    out = (allocate or matrix.new_empty)(shape)
    library.sepconv_pack_panels(matrix.data_ptr(), matrix.shape[0], matrix.shape[1],
                                int(transposed), out.data_ptr())
    return out


def separable_forward(library, x, depthwise, packed, biases, out, geometry, activation, stream):
    """Run the kernel: ``out[N*H_out*W_out, N_out] = act(depthwise(x) @ W + b)``.

    Args:
        library: from :func:`load`.
        x: float32 ``[n, c, h, w]``, contiguous in ``channels_last`` memory (NHWC order).
        depthwise: contiguous ``[kh, kw, c]`` float32 (depth multiplier 1).
        packed: from :func:`pack_pointwise`.
        biases: contiguous ``[N_out]`` float32, or None.
        out: contiguous float32 ``[n*h_out*w_out, N_out]``, written.
        geometry: ``(stride, rate, (pad_top, pad_left), (h_out, w_out))``.
        activation: None, ``'relu'`` or ``'relu6'``.
        stream: write the output with non-temporal stores (``out`` 32-byte
            aligned, ``N_out`` a multiple of 8).

    Raises:
        MemoryError: the kernel could not allocate its work buffer.
    """
    forward_with(library, layer_params(x.shape, depthwise.shape[:2], out.shape[1], geometry,
                                       activation, stream), x, depthwise, packed, biases, out)


def forward_with(library, params, x, depthwise, packed, biases, out):
    """:func:`separable_forward` with its parameter block from :func:`layer_params`."""
    failed = library.sepconv_separable_forward(
        x.data_ptr(), depthwise.data_ptr(), packed.data_ptr(),
        0 if biases is None else biases.data_ptr(), out.data_ptr(), ctypes.addressof(params))
    if failed:
        _raise_memory_error(params)


def separable_backward(library, x, depthwise, packed_t, grad_out, out, grad_x, geometry,
                       activation, has_biases):
    """The gradients of a training step whose forward was :func:`separable_forward`'s.

    Args:
        library, x, depthwise, geometry, activation: as the forward's.
        packed_t: :func:`pack_pointwise` of the ``[c, N_out]`` pointwise
            matrix, transposed.
        grad_out: contiguous float32 ``[n*h_out*w_out, N_out]``, the output's gradient.
        out: the forward's output (after the activation), same shape.
        grad_x: contiguous float32 ``[n, h, w, c]``, written with the input's gradient.
        has_biases: whether to return the bias gradient.

    Returns:
        ``(grad_depthwise, grad_pointwise, grad_biases)``: ``[kh, kw, c]``,
        ``[c, N_out]``, ``[N_out]`` or None.

    Raises:
        MemoryError: the kernel could not allocate its work buffers.
    """
    c = x.shape[1]
    grad_depthwise = x.new_empty(depthwise.shape)
    grad_pointwise = x.new_empty((c, out.shape[1]))
    grad_biases = x.new_empty(out.shape[1]) if has_biases else None
    params = layer_params(x.shape, depthwise.shape[:2], out.shape[1], geometry, activation, False)
    failed = library.sepconv_separable_backward(
        x.data_ptr(), depthwise.data_ptr(), packed_t.data_ptr(), grad_out.data_ptr(),
        out.data_ptr(), grad_x.data_ptr(), grad_depthwise.data_ptr(), grad_pointwise.data_ptr(),
        0 if grad_biases is None else grad_biases.data_ptr(), ctypes.addressof(params))
    if failed:
        _raise_memory_error(params)
    return grad_depthwise, grad_pointwise, grad_biases


def _raise_memory_error(params):
    n, h, w, c = params[:4]
    raise MemoryError(f"sepconv's kernel could not allocate its work buffer for an NHWC "
                      f"input of shape {(n, h, w, c)} and {params[14]} output channels")


def layer_params(shape, kernel, channels_out, geometry, activation, stream):
    """The kernel's parameter block (its ``Layer``), cached per call shape.

    Args:
        shape: the input's NCHW shape ``(n, c, h, w)``.
        kernel: ``(kh, kw)``.
        channels_out, geometry, activation, stream: as :func:`separable_forward`'s.
    """
    key = (shape, kernel, geometry, channels_out, activation, stream)
    params = _params.get(key)
    if params is None:
        n, c, h, w = shape
        (sh, sw), (rh, rw), (pad_top, pad_left), (oh, ow) = geometry
        params = (ctypes.c_int64 * 17)(n, h, w, c, kernel[0], kernel[1], sh, sw, rh, rw, pad_top,
                                       pad_left, oh, ow, channels_out, ACTIVATIONS[activation],
                                       int(stream))
        if len(_params) >= 1024:  # shapes seen by a long-lived process stay bounded
            _params.clear()
        _params[key] = params
    return params


# The kernel's parameter block per call shape: building it costs more than the lookup.
_params = {}
