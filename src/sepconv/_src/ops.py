"""The math of the separable layer: TF geometry, depthwise, pointwise, batch norm.

No variables live here. Weights arrive in TF's layouts (depthwise
``[kh, kw, cin, m]``, pointwise ``[1, 1, cin*m, out]``). Both the TF1-style
layer and the ``nn.Module`` call these functions, and so does every fast path:
there is no second implementation of the math.

Why the fast path looks the way it does (measured gains in
``docs/performance.md``):

* The float32 forward with depth multiplier 1 (inference, and a training
  step's forward) runs a compiled kernel (``native/kernels.cpp``, built on
  first use): depthwise into a cache-resident tile, then the pointwise GEMM
  on pre-packed weights with bias and activation applied as it stores. It
  pads exactly as TF does. It also runs a training step's backward when the
  batch has at least one image per thread and the pointwise weights are at
  most ``NATIVE_BACKWARD_MAX_WEIGHTS``: whole images per thread, the
  depthwise output recomputed per row tile, every intermediate in cache. The
  rest of this list is the PyTorch path, which runs everything else (the
  backward of larger layers and of small batches, float64, depth
  multipliers above 1) and all of it when the kernel cannot be built.
* The layer runs in NHWC memory order whatever ``data_format`` says. An NHWC
  tensor viewed as NCHW is a zero-copy ``channels_last`` tensor, which is
  what oneDNN's depthwise kernel wants, and in NHWC the pointwise stage is a
  plain GEMM ``[N*H*W, cin*m] @ [cin*m, out]`` whose right operand is TF's
  pointwise weight as it is stored: no weight conversion, no layout copy.
* TF's asymmetric SAME padding (the odd pixel goes bottom/right) is
  expressed, at inference, without padding the activation: one leading zero
  tap on the kernel plus PyTorch's symmetric padding gives the same windows
  (a non-finite output is recomputed with explicit padding, which is exact).
  Training pads chunk by chunk instead.
* Large batches run image group by image group (``CHUNK_BYTES``), so the
  depthwise intermediate stays in cache on its way to the GEMM.
* Training goes through ``_KernelSeparableFunction`` where the kernel runs
  the whole step, else through ``_SeparableFunction``: each saves only the
  input and the output (and the first the weights, as they are) and
  recomputes the cheap depthwise stage in backward.
* Bias and activation are applied in place on the GEMM output, which the
  GEMM's backward does not need, so this is safe under autograd.
* The layer allocates its output itself; from 32 MB on, from recycled,
  huge-page-advised buffers (``buffers.py``), as a fresh mapping would fault
  its pages in on every call.
* Converted weights are cached per weight version when no gradient flows.
* A repeated no-gradient call with a small output runs the kernel call its
  signature recorded the first time, with only the checks that depend on the
  tensors themselves (``_Repeat``): at batch 1, half the Python of a call.
"""
import functools
import weakref

import torch
import torch.autograd.forward_ad as _forward_ad
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook

from . import buffers, native, utils

# Activations the layer can apply in place on its own output.
EPILOGUE_ACTIVATIONS = ("relu", "relu6")


def same_padding(size, kernel, stride, dilation):
    """TF's SAME padding of one spatial dimension, as ``(before, after)``.

    The output has ``ceil(size / stride)`` elements. When the total padding is
    odd, TF puts the extra element *after* (bottom/right); PyTorch's symmetric
    ``padding=`` cannot express that, which is why ports often get it wrong.

    Example:
        >>> same_padding(224, 3, 2, 1)  # stride 2 on an even input
        (0, 1)
        >>> same_padding(7, 3, 1, 2)
        (2, 2)
    """
    effective = (kernel - 1) * dilation + 1
    # (ceil(size / stride) - 1) * stride + effective - size, written through size % stride:
    # a plain int, so torch.compile's dynamic shapes guard on that alone (with the general
    # formula of a symbolic size, Inductor failed to print its guards).
    short = int((stride - size % stride) % stride)
    total = max(short + effective - stride, 0)
    return total // 2, total - total // 2


def conv_geometry(spatial, kernel, stride, rate, padding):
    """Padding and output size of a TF convolution over ``spatial = (h, w)``.

    Args:
        spatial: input (height, width).
        kernel, stride, rate: (height, width) pairs.
        padding: ``'SAME'`` or ``'VALID'``, any case.

    Returns:
        ``(pads, out)``: ``pads = ((top, bottom), (left, right))`` and
        ``out = (out_h, out_w)``.

    Raises:
        ValueError: if ``padding`` is neither, if a rate and a stride are
            both above 1 (TF 1.4's rule),
            or a VALID input is smaller than the dilated kernel.
    """
    padding = utils.padding_mode(padding)  # any case, as TF; anything else raises
    if max(rate) > 1 and max(stride) > 1:
        raise ValueError(f"rate {list(rate)} and stride {list(stride)} are both above 1: "
                         "if any rate value is larger than one, then both stride values "
                         "need to be one.")
    pads, out = [], []
    for size, k, s, d in zip(spatial, kernel, stride, rate):
        effective = (k - 1) * d + 1
        if padding == "SAME":
            pads.append(same_padding(size, k, s, d))
            out.append((size + s - 1) // s)
        else:
            if size < effective:
                raise ValueError(f"Input spatial size {list(spatial)} is smaller than the dilated "
                                 f"kernel size {[(kk - 1) * dd + 1 for kk, dd in zip(kernel, rate)]} "
                                 "with VALID padding.")
            pads.append((0, 0))
            out.append((size - effective) // s + 1)
    return tuple(pads), tuple(out)


def output_shape(input_shape, kernel, stride, rate, padding, data_format, channels_out):
    """The full output shape of the layer for a 4-D ``input_shape``."""
    spatial = input_shape[1:3] if data_format == "NHWC" else input_shape[2:4]
    _, (out_h, out_w) = conv_geometry(spatial, kernel, stride, rate, padding)
    if data_format == "NHWC":
        return (input_shape[0], out_h, out_w, channels_out)
    return (input_shape[0], channels_out, out_h, out_w)


def depthwise_kernel(depthwise_weights):
    """TF ``[kh, kw, cin, m]`` to torch grouped-conv ``[cin*m, 1, kh, kw]``.

    TF's output channel ``c*m + j`` comes from input channel ``c``, which is
    exactly torch's grouping of ``cin*m`` filters into ``cin`` groups.
    """
    kh, kw, cin, mult = depthwise_weights.shape
    return depthwise_weights.permute(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)


def pointwise_matrix(pointwise_weights):
    """TF ``[1, 1, cin*m, out]`` as the GEMM operand ``[cin*m, out]`` (a view)."""
    return pointwise_weights.reshape(pointwise_weights.shape[2], pointwise_weights.shape[3])


# ----------------------------------------------------------------------------
# Weight-layout cache
# ----------------------------------------------------------------------------
_WEIGHT_CACHE = {}
# Optimizer steps so far: fused optimizers (``torch.optim``'s ``fused=True``)
# write the parameters without bumping their version counters.
_optimizer_steps = [0]


def _count_optimizer_step(optimizer, args, kwargs):
    _optimizer_steps[0] += 1


register_optimizer_step_post_hook(_count_optimizer_step)


def _cached(kind, weights, convert):
    """``convert(*weights)``, cached on the weights' identities and contents.

    The cache is used only when no gradient can flow to the weights (the
    converted tensor would otherwise be cut from autograd), outside graph
    tracing, and for weights that are not inference tensors. An entry holds
    while every weight is the same object with the same version counter
    (in-place updates), data pointer (``w.data = other``) and sampled memory
    fingerprint, and no optimizer has stepped. The fingerprint (CPU) sees
    writes the counter does not count when they rewrite the whole weight,
    as fused optimizers and ``w.data.mul_(2)`` do; a write through
    ``w.data`` or a numpy view to a few elements may fall between its 64
    sampled words: edit weights in place under ``torch.no_grad()`` instead,
    which counts the change. Entries made under ``torch.inference_mode``
    serve only calls under it. Entries of dead weights are dropped by a
    weakref callback.
    """
    if _only_torch_ops():
        return convert(*weights)
    grad_enabled = torch.is_grad_enabled()
    # One pass, no generators: this runs on every inference call.
    key, state, present = [kind, torch.is_inference_mode_enabled()], [_optimizer_steps[0]], []
    for w in weights:
        if w is None:
            key.append(None)
            state.append(None)
            continue
        # Inference tensors have no version counter: nothing would tell an
        # in-place write to one element from no write at all.
        if (grad_enabled and w.requires_grad) or w.is_inference():
            return convert(*weights)
        present.append(w)
        key.append(id(w))
        state.append((w._version, w.data_ptr(), native.fingerprint(w)))
    key, state = tuple(key), tuple(state)
    entry = _WEIGHT_CACHE.get(key)
    if entry is not None:
        refs, cached_state, value = entry
        if cached_state == state and all(r() is w for r, w in zip(refs, present)):
            return value
    with torch.no_grad():
        value = convert(*weights)
    # (The cache bound as a default: at interpreter exit the module's globals may be gone.)
    refs = tuple(weakref.ref(w, lambda _, key=key, cache=_WEIGHT_CACHE: cache.pop(key, None))
                 for w in present)
    _WEIGHT_CACHE[key] = (refs, state, value)
    return value


def forget_cached(tensors):
    """Drops the weight cache's entries of ``tensors``, and with them its weak references.

    ``torch.utils.swap_tensors`` refuses a tensor that has weak references:
    PyTorch swaps parameters when a module is converted or loaded with
    ``torch.__future__.set_swap_module_params_on_conversion(True)`` (and for
    tensor subclasses). sepconv's modules call this first.
    """
    ids = {id(t) for t in tensors}
    for key, (refs, _, _) in list(_WEIGHT_CACHE.items()):
        if any(id(ref()) in ids for ref in refs):
            _WEIGHT_CACHE.pop(key, None)


def _only_torch_ops():
    """Whether this call must run PyTorch's own ops and nothing else.

    So it must while torch.compile or torch.jit.trace records a graph (they
    record operations, not values), and under forward-mode AD and the
    ``torch.func`` transforms (which follow operations through tensors of their
    own): no cache, no data-dependent branch, no compiled kernel (a ctypes
    call drops tangents and is never recorded), no custom autograd Function.
    """
    return (_is_compiling() or _jit_tracing() or _forward_ad._current_level >= 0
            or _functorch_level() is not None)


# Looked up once: this runs several times per call.
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)
_jit_tracing = getattr(torch._C, "_is_tracing", torch.jit.is_tracing)  # without the Python wrapper
_functorch_level = torch._C._functorch.maybe_current_level


# ----------------------------------------------------------------------------
# Depthwise stage
# ----------------------------------------------------------------------------
def _depthwise_plan(pads, rate):
    """How to realise TF's padding with PyTorch's symmetric conv padding.

    Returns ``(conv_padding, lead_zeros, explicit_pad)``. When ``after`` is
    ``before + 1`` and the rate is 1, a zero tap in front of the kernel with
    symmetric padding ``after`` reads the same windows as TF, without copying
    the activation; otherwise (dilated and odd) an explicit pad is needed.
    """
    conv_padding, lead_zeros, explicit = [], [], False
    for (before, after), d in zip(pads, rate):
        if before == after:
            conv_padding.append(before)
            lead_zeros.append(0)
        elif after == before + 1 and d == 1:
            conv_padding.append(after)
            lead_zeros.append(1)
        else:
            explicit = True
    if explicit:
        return (0, 0), (0, 0), True
    return tuple(conv_padding), tuple(lead_zeros), False


def _zero_tap_is_exact(x):
    """The zero tap multiplies a real pixel, so it is exact only on a finite input.

    ``0 * inf`` and ``0 * nan`` are NaN where TF reads no pixel at all. A finite
    sum proves every element finite (an overflowing sum only costs the fast
    path); under ``torch.compile`` the data-dependent test is skipped.
    """
    if x.device.type == "meta":  # shapes only: there are no values to be wrong
        return True
    return not _only_torch_ops() and bool(torch.isfinite(x.detach().sum()))


def _padding_is_exact(pads, depthwise_weights):
    """Whether the conv's own padding computes TF's SAME output.

    oneDNN skips the taps that fall in its padding; TF multiplies them by the
    padded zeros, which gives NaN for a non-finite weight (``0 * inf``). Only
    non-finite weights tell the two apart: those need an explicit pad, and so
    does a traced graph, which must hold for any weights.
    """
    if not any(p for pair in pads for p in pair) or depthwise_weights.device.type == "meta":
        return True
    return not _only_torch_ops() and _cached(("finite",), (depthwise_weights,),
                                      lambda w: bool(torch.isfinite(w).all()))


def _expanded_depthwise_kernel(depthwise_weights, lead_zeros):
    kernel = depthwise_kernel(depthwise_weights)
    if any(lead_zeros):
        kernel = F.pad(kernel, (lead_zeros[1], 0, lead_zeros[0], 0))
    return kernel.contiguous()


def depthwise_conv2d_nchw(x, depthwise_weights, stride, rate, pads):
    """Depthwise convolution of an NCHW(-viewed) tensor with TF-layout weights.

    Args:
        x: ``[N, C, H, W]``, any memory format (channels_last is fastest).
        depthwise_weights: ``[kh, kw, C, m]``.
        stride, rate: (height, width) pairs.
        pads: ``((top, bottom), (left, right))`` from :func:`conv_geometry`.

    Returns:
        ``[N, C*m, H_out, W_out]`` in the memory format oneDNN picks for ``x``.
    """
    conv_padding, lead_zeros, explicit = _depthwise_plan(pads, rate)
    if (any(lead_zeros) and not _zero_tap_is_exact(x)) or not _padding_is_exact(pads, depthwise_weights):
        conv_padding, lead_zeros, explicit = (0, 0), (0, 0), True
    if explicit:
        (top, bottom), (left, right) = pads
        x = F.pad(x, (left, right, top, bottom))
    kernel = _cached(("depthwise", lead_zeros), (depthwise_weights,),
                     lambda w: _expanded_depthwise_kernel(w, lead_zeros))
    return F.conv2d(x, kernel, None, stride, conv_padding, rate, groups=x.shape[1])


# ----------------------------------------------------------------------------
# The layer
# ----------------------------------------------------------------------------
# When the whole depthwise intermediate is larger than CHUNK_THRESHOLD_BYTES
# (measured: from 8 MB, e.g. 28x28x256 at batch 16, chunks win), the
# layer runs image group by image group, each group's intermediate about
# CHUNK_BYTES, so it stays in cache between the depthwise conv that writes it
# and the GEMM that reads it instead of a round trip through DRAM. Below the
# threshold one chunk is faster: fewer, larger GEMMs.
CHUNK_BYTES = 2 << 20
CHUNK_THRESHOLD_BYTES = 8 << 20


def _apply_activation_(y, activation):
    if activation == "relu":
        return y.relu_()
    if activation == "relu6":
        return y.clamp_(0.0, 6.0)
    return y


def _activation_backward(grad, output, activation):
    """The gradient through the activation, from its output (as torch's relu does)."""
    if activation == "relu":
        return torch.ops.aten.threshold_backward(grad, output, 0)
    if activation == "relu6":
        return torch.ops.aten.hardtanh_backward(grad, output, 0.0, 6.0)
    return grad


def fusable_activation(activation_fn):
    """The epilogue name of ``activation_fn`` if ops can apply it in place, else None.

    Example:
        >>> fusable_activation(torch.relu), fusable_activation(torch.tanh)
        ('relu', None)
    """
    if activation_fn in (torch.relu, F.relu, torch.nn.functional.relu):
        return "relu"
    if activation_fn is F.relu6:
        return "relu6"
    return None


def _check_activation(activation):
    if activation is not None and activation not in EPILOGUE_ACTIVATIONS:
        raise ValueError(f"Invalid activation {activation!r}: expected None or one of "
                         f"{list(EPILOGUE_ACTIVATIONS)}.")


def _as_channels_last_nchw(inputs, data_format):
    """The input as an NCHW-shaped tensor in NHWC memory order.

    Zero-copy for contiguous NHWC input; NCHW input pays one copy, which
    oneDNN's depthwise kernel and the NHWC GEMM repay (see performance.md).
    """
    if data_format == "NHWC":
        return _nhwc_as_nchw(inputs)
    return inputs.contiguous(memory_format=torch.channels_last)


def _nhwc_as_nchw(inputs):
    """An NHWC tensor viewed as NCHW: a zero-copy channels_last tensor."""
    if inputs.shape[3] == 1:
        # With one channel the permuted strides are both NCHW- and NHWC-contiguous, and
        # oneDNN in torch 2.13 then returns wrong, run-dependent weight gradients for
        # strided 1x1 kernels (golden config 3). Plain NCHW strides are the same memory.
        return inputs.reshape(inputs.shape[0], 1, inputs.shape[1], inputs.shape[2])
    return inputs.permute(0, 3, 1, 2)


class _Geometry:
    """A depthwise conv's arguments for torch.

    ``explicit`` is None when the conv's symmetric ``padding`` is TF's, else
    the ``F.pad`` amounts ``(left, right, top, bottom)`` applied per chunk:
    a chunk is cache-resident, so its padded copy is cheap, and exact for
    any input (unlike a zero tap, which turns ``0 * inf`` into NaN).
    """

    def __init__(self, stride, rate, conv_padding, groups, out_size, explicit=None):
        self.stride, self.rate, self.padding, self.groups = stride, rate, conv_padding, groups
        self.out_h, self.out_w = out_size
        self.explicit = explicit

    def pad(self, x):
        return x if self.explicit is None else F.pad(x, self.explicit)

    def depthwise(self, x, kernel):
        return F.conv2d(self.pad(x), kernel, None, self.stride, self.padding, self.rate,
                        groups=self.groups)

    def crop(self, padded):
        """The gradient of :meth:`pad`: the unpadded window of ``padded``."""
        if self.explicit is None:
            return padded
        left, right, top, bottom = self.explicit
        return padded[:, :, top:padded.shape[2] - bottom, left:padded.shape[3] - right]


def _rows(y):
    """An ``[N, C, H, W]`` depthwise output as GEMM rows ``[N*H*W, C]`` (a view if NHWC-ordered)."""
    n, channels, h, w = y.shape
    return y.permute(0, 2, 3, 1).reshape(n * h * w, channels)


def _pointwise_(rows, weights, biases, activation, out=None):
    """``activation(rows @ weights + biases)``, the epilogue in place on the GEMM output."""
    if biases is None:
        y = torch.mm(rows, weights) if out is None else torch.mm(rows, weights, out=out)
    else:
        y = (torch.addmm(biases, rows, weights) if out is None
             else torch.addmm(biases, rows, weights, out=out))
    return _apply_activation_(y, activation)


def _images_per_chunk(x, kernel, geometry):
    """``(images per chunk, output pixels per image)``: a chunk's depthwise output is ~``CHUNK_BYTES``."""
    pixels = geometry.out_h * geometry.out_w
    image_bytes = max(pixels * kernel.shape[0] * x.element_size(), 1)
    if geometry.explicit is not None:
        # The padded copy of the input is an intermediate too.
        image_bytes = max(image_bytes, x[:1].numel() * x.element_size())  # [:1]: the batch may be empty
    if image_bytes * x.shape[0] <= CHUNK_THRESHOLD_BYTES:
        return max(x.shape[0], 1), pixels  # at least 1: an empty batch still steps through range()
    # Each thread works on its share of a chunk: the working set per thread
    # stays the same, and there are fewer parallel regions (each one is a
    # barrier, costly when a thread is descheduled on a busy machine).
    chunk_bytes = CHUNK_BYTES * max(torch.get_num_threads(), 1)
    return max(1, min(x.shape[0], chunk_bytes // image_bytes)), pixels


def _forward_rows(x, kernel, weights, biases, geometry, activation):
    """The layer's output as rows ``[N*H_out*W_out, out]``, chunk by chunk of images.

    Runs without autograd (inference, or inside :class:`_SeparableFunction`):
    the GEMM writes straight into the output, which this function allocates.
    """
    per_chunk, pixels = _images_per_chunk(x, kernel, geometry)
    n = x.shape[0]
    if per_chunk >= n and not buffers.is_large(n * pixels * weights.shape[1], x):
        # One chunk: the GEMM allocates its output after the conv's, and no
        # slicing. Against writing into an output allocated first: 2-4% faster
        # at batch 1 on every layer of the suite (median of 200, 1 and 2 threads);
        # against the same through large_empty(out=): 1-2% faster.
        return _pointwise_(_rows(geometry.depthwise(x, kernel)), weights, biases, activation)
    out = buffers.large_empty((n * pixels, weights.shape[1]), x)
    for start in range(0, n, per_chunk):
        stop = min(start + per_chunk, n)
        # The chunk's intermediate is a temporary, freed before the next chunk's
        # conv allocates one, so glibc hands the same block back. Held across
        # that allocation (a loop variable), the freed block sat at the heap's
        # top and was trimmed, and the next one faulted in afresh: 16x112x112x32
        # -> 64, median of 40, 1 thread 35.1 -> 23.8 ms, 2 threads 22.6 -> 16.2 ms.
        _pointwise_(_rows(geometry.depthwise(x[start:stop], kernel)), weights, biases, activation,
                    out=out[start * pixels:stop * pixels])
    return out


# MKL threads a GEMM of few rows poorly. With 2 threads, [49, 1024] @
# [1024, 1024] (7x7x1024 at batch 1) took 0.82 ms as one addmm and 0.69 ms as
# a batched GEMM of two column blocks, which bmm runs one block per thread.
# Measured over K, N from 256 to 2048: 5-50% faster up to 64 rows, no gain
# from about 100 rows on; with 1 thread there is nothing to split.
FEW_ROWS = 64


def _gemm_column_blocks(x, geometry, channels_out):
    """How many column blocks the inference GEMM runs as (1: one plain GEMM)."""
    if x.shape[0] * geometry.out_h * geometry.out_w > FEW_ROWS or x.device.type != "cpu":
        return 1
    threads = torch.get_num_threads()
    return threads if threads > 1 and channels_out % threads == 0 else 1


def _column_blocks(pointwise_weights, biases, blocks):
    """The GEMM operands as ``blocks`` column blocks: ``[blocks, K, N/blocks]``, ``[blocks, 1, N/blocks]``."""
    weights = pointwise_matrix(pointwise_weights)
    k, n = weights.shape
    weight_blocks = weights.reshape(k, blocks, n // blocks).transpose(0, 1).contiguous()
    return weight_blocks, None if biases is None else biases.reshape(blocks, 1, n // blocks)


def _pointwise_by_column_blocks(rows, weight_blocks, bias_blocks, activation):
    """:func:`_pointwise_` as one batched GEMM over column blocks, then the blocks side by side."""
    blocks, _, width = weight_blocks.shape
    stacked = rows.expand(blocks, *rows.shape)
    products = (torch.bmm(stacked, weight_blocks) if bias_blocks is None
                else torch.baddbmm(bias_blocks, stacked, weight_blocks))
    out = rows.new_empty(rows.shape[0], blocks * width)
    out.view(rows.shape[0], blocks, width).copy_(products.transpose(0, 1))
    return _apply_activation_(out, activation)


class _SeparableFunction(torch.autograd.Function):
    """Depthwise + pointwise + bias + activation with a chunked, recomputing backward.

    Saves only the input, and the output if an activation's backward needs
    it: the depthwise output is recomputed per chunk in backward (it is the
    cheap stage), so it never occupies memory between forward and backward,
    and every intermediate of the backward stays in cache.
    ``native_forward``, when given, is the compiled kernel's forward (for a
    call whose backward the kernel does not take, see
    :class:`_KernelSeparableFunction`). The backward is made of
    differentiable ops, so higher-order gradients (``create_graph=True``)
    flow through it.
    """

    @staticmethod
    def forward(ctx, x, kernel, weights, biases, geometry, activation, native_forward):
        out = (native_forward() if native_forward is not None
               else _forward_rows(x, kernel, weights, biases, geometry, activation))
        ctx.geometry, ctx.activation = geometry, activation
        ctx.has_biases = biases is not None
        # Only the activation's backward reads the output: without one it is not saved, so
        # the caller may change it in place (a residual ``out += x``), as after torch's conv.
        ctx.save_for_backward(x, kernel, weights, out if activation is not None else None)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, kernel, weights, out = ctx.saved_tensors
        geometry, activation = ctx.geometry, ctx.activation
        need_x, need_kernel, need_weights, need_biases = ctx.needs_input_grad[:4]
        per_chunk, pixels = _images_per_chunk(x, kernel, geometry)
        chunked = per_chunk < x.shape[0]
        grad_x = None
        if need_x and chunked:  # NHWC memory, like the forward's input view
            n, c, h, w = x.shape
            grad_x = buffers.large_empty((n, h, w, c), x).permute(0, 3, 1, 2)
        grad_kernel = torch.zeros_like(kernel) if need_kernel else None
        grad_weights = torch.zeros_like(weights) if need_weights else None
        grad_biases = grad_out.new_zeros(weights.shape[1]) if need_biases and ctx.has_biases else None
        for start in range(0, x.shape[0], per_chunk):
            stop = min(start + per_chunk, x.shape[0])
            rows = slice(start * pixels, stop * pixels)
            grad = _activation_backward(grad_out[rows], None if out is None else out[rows],
                                        activation)
            if grad_biases is not None:
                grad_biases += grad.sum(0)
            x_chunk = x[start:stop]
            if need_weights:
                grad_weights.addmm_(_rows(geometry.depthwise(x_chunk, kernel)).t(), grad)
            if need_x or need_kernel:
                # [rows, C] in NHWC order, viewed as the NCHW-shaped depthwise output.
                grad_depthwise = torch.mm(grad, weights.t()).view(
                    stop - start, geometry.out_h, geometry.out_w, -1).permute(0, 3, 1, 2)
                del grad  # not needed any more: free it before the conv's backward allocates
                gx, gk, _ = torch.ops.aten.convolution_backward(
                    grad_depthwise, geometry.pad(x_chunk), kernel, None, geometry.stride,
                    geometry.padding, geometry.rate, False, [0, 0], geometry.groups,
                    [need_x, need_kernel, False])
                del grad_depthwise
                if need_x and chunked:
                    grad_x[start:stop].copy_(geometry.crop(gx))
                elif need_x:  # one chunk: the conv's own gradient, no copy
                    grad_x = geometry.crop(gx)
                if need_kernel:
                    grad_kernel += gk
                del gx, gk  # before the next chunk allocates its own (see _forward_rows)
        if need_x and grad_x is None:  # no images: no chunk ran
            grad_x = torch.zeros_like(x)
        return grad_x, grad_kernel, grad_weights, grad_biases, None, None, None


class _KernelSeparableFunction(torch.autograd.Function):
    """A training step in the compiled kernel, forward and backward, on TF's weight layouts.

    The weights go in as TF holds them and their gradients come back so: no
    layout conversion and no autograd node besides this one (a training step
    of 16x56x56x128 -> 256 s2 took 0.36-0.46 ms less, 2 threads). Saves
    the input, the weights and, for an activation's backward, the output; the
    kernel's backward recomputes the depthwise stage. Higher-order gradients
    (``create_graph=True``) need differentiable ones: they come from
    ``differentiable``, the PyTorch path of the same layer, recomputed on the
    saved tensors.
    """

    @staticmethod
    def forward(ctx, x, depthwise_weights, pointwise_weights, biases, library, geometry,
                activation, differentiable):
        out = _native_rows(library, x, depthwise_weights, pointwise_weights, biases, geometry,
                           activation, True)
        ctx.library, ctx.geometry, ctx.activation = library, geometry, activation
        ctx.differentiable = differentiable
        # As in _SeparableFunction: without an activation the output is not saved.
        ctx.save_for_backward(x, depthwise_weights, pointwise_weights, biases,
                              out if activation is not None else None)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        *inputs, out = ctx.saved_tensors
        needs = ctx.needs_input_grad[:4]
        if torch.is_grad_enabled():
            grads = _recomputed_gradients(ctx.differentiable, inputs, needs, grad_out)
        else:
            grads = _kernel_gradients(ctx.library, ctx.geometry, *inputs, grad_out, out,
                                      ctx.activation)
        return (*(g if need else None for g, need in zip(grads, needs)), None, None, None, None)


def _recomputed_gradients(layer_rows, inputs, needs, grad_out):
    """Differentiable gradients of ``layer_rows(*inputs)`` for the inputs in ``needs``."""
    with torch.enable_grad():
        wrt = [t for t, need in zip(inputs, needs) if need]
        grads = iter(torch.autograd.grad(layer_rows(*inputs), wrt, grad_out, create_graph=True))
    return [next(grads) if need else None for need in needs]


def _plan_uncached(spatial, kernel, stride, rate, padding):
    pads, out = conv_geometry(spatial, kernel, stride, rate, padding)
    return pads, out, _depthwise_plan(pads, rate)


# The geometry is pure and costs ~10 us of Python per call: memoised, except
# under torch.compile, which traces the plain function (it warns on lru_cache).
_plan_cached = functools.lru_cache(maxsize=256)(_plan_uncached)


def _plan(*args):
    return _plan_uncached(*args) if _only_torch_ops() else _plan_cached(*args)


def _layer_rows(x, depthwise_weights, pointwise_weights, biases, geometry, lead_zeros,
                activation, needs_grad, native_forward=None):
    """The layer's output as rows ``[N*H_out*W_out, channels_out]``, by the fastest path."""
    kernel = _cached(("depthwise", lead_zeros), (depthwise_weights,),
                     lambda w: _expanded_depthwise_kernel(w, lead_zeros))
    if pointwise_weights is None:
        rows = _rows(geometry.depthwise(x, kernel))
        if biases is not None:
            # The depthwise conv's backward does not need its output: in place is safe.
            rows = rows.add_(biases)
        return _apply_activation_(rows, activation)
    weights = pointwise_matrix(pointwise_weights)
    if _only_torch_ops():
        # One traceable graph for torch.compile (which does its own fusion) or jit.trace.
        return _pointwise_(_rows(geometry.depthwise(x, kernel)), weights, biases, activation)
    if needs_grad:
        return _SeparableFunction.apply(x, kernel, weights, biases, geometry, activation,
                                        native_forward)
    blocks = _gemm_column_blocks(x, geometry, weights.shape[1])
    if blocks > 1:
        weight_blocks, bias_blocks = _cached(("column blocks", blocks), (pointwise_weights, biases),
                                             lambda w, b: _column_blocks(w, b, blocks))
        return _pointwise_by_column_blocks(_rows(geometry.depthwise(x, kernel)), weight_blocks,
                                           bias_blocks, activation)
    return _forward_rows(x, kernel, weights, biases, geometry, activation)


def _torch_rows(x, depthwise_weights, pointwise_weights, biases, stride, rate, pads, out_size,
                plan, activation, needs_grad, native_forward=None):
    """The layer's rows by PyTorch's conv and GEMM: training, and what the kernel cannot run.

    ``native_forward``: if not None, the kernel's call for a training step's
    forward (see :class:`_SeparableFunction`).
    """
    conv_padding, lead_zeros, needs_pad = plan
    (top, bottom), (left, right) = pads
    asymmetric = (top, left) != (bottom, right)
    finite_weights = _padding_is_exact(pads, depthwise_weights)
    # Inference keeps the zero tap for TF's asymmetric SAME: it copies
    # nothing (22 ms against 25 ms for per-chunk copies at 16x112x112x64 s2).
    # Training, a traced graph and dilated odd padding pad chunk by chunk
    # instead: exact for any input, and the backward is the plain kernel's
    # (123 -> 95 ms for that layer's training step); so do non-finite weights.
    # Off the CPU (meta, an accelerator) no zero tap: its finiteness check would sync every call.
    zero_tap = asymmetric and finite_weights and not (
        needs_pad or needs_grad or _only_torch_ops() or x.device.type != "cpu")
    explicit = (asymmetric or not finite_weights) and not zero_tap
    if explicit:
        conv_padding, lead_zeros = (0, 0), (0, 0)
    geometry = _Geometry(stride, rate, conv_padding, x.shape[1], out_size,
                         (left, right, top, bottom) if explicit else None)
    rows = _layer_rows(x, depthwise_weights, pointwise_weights, biases, geometry, lead_zeros,
                       activation, needs_grad, native_forward)
    if zero_tap and not bool(torch.isfinite(rows.sum())):
        # The zero tap multiplies a real pixel: 0 * inf is NaN where TF reads
        # no pixel. A non-finite result (rare) is recomputed the exact way;
        # checking the fresh, cache-resident output is cheaper than the input.
        geometry.padding, geometry.explicit = (0, 0), (left, right, top, bottom)
        rows = _layer_rows(x, depthwise_weights, pointwise_weights, biases, geometry, (0, 0),
                           activation, needs_grad, native_forward)
    return rows


# The kernel's outputs come from the pool from 4 MiB on (the PyTorch path's
# from 32 MiB). In the benchmark, where other engines' allocations come
# between calls, a fresh 25.7 MB output (16x56x56x128) faulted its pages in
# again on some runs: 12.6-17.7 ms per call against 11.3-11.8 ms pooled
# (2 threads, two runs each).
KERNEL_POOL_BYTES = 4 << 20


def _native_library(x, depthwise_weights, pointwise_weights, biases):
    """The compiled kernel if it can compute this call's forward, else None.

    It covers the common case: float32 on the CPU, depth multiplier 1, a
    pointwise stage. Everything else runs the PyTorch path; a call that needs
    a gradient runs its forward here, and its backward here where
    ``_kernel_takes_backward`` says so.
    """
    if pointwise_weights is None or _only_torch_ops():
        return None
    kh, kw, _, multiplier = depthwise_weights.shape
    if multiplier != 1 or kh * kw > native.MAX_TAPS:
        return None
    if not _kernel_dtype_and_device(x, depthwise_weights, pointwise_weights, biases):
        return None
    return native.load()


def _kernel_dtype_and_device(*operands):
    for operand in operands:  # a loop, and ``is_cpu``, as this runs on every call
        if operand is not None and not (operand.dtype is torch.float32 and operand.is_cpu):
            return False
    return True


def _native_rows(library, x, depthwise_weights, pointwise_weights, biases, geometry, activation,
                 training):
    """The layer's rows ``[N*H_out*W_out, out]`` from the compiled kernel (see ``native``).

    In training the weights change every step: their kernel layouts are
    made afresh in recycled memory, where a cached copy would only hold
    memory (a training step's backward packs its own layout there too).
    """
    oh, ow = geometry[3]
    channels_out = pointwise_weights.shape[3]
    out = _pooled(x, (x.shape[0] * oh * ow, channels_out))
    if out.numel() == 0:
        return out
    if training:
        depthwise, packed = _native_weights(depthwise_weights, pointwise_weights,
                                            functools.partial(_pooled, x))
    else:
        depthwise, packed = _inference_weights(depthwise_weights, pointwise_weights)
    # Non-temporal stores for outputs beyond the cache: no read of the lines they overwrite.
    stream = (buffers.is_large(out.numel(), x) and channels_out % 8 == 0
              and out.data_ptr() % 32 == 0)
    native.separable_forward(library, x, depthwise, packed,
                             None if biases is None else biases.contiguous(), out, geometry,
                             activation, stream)
    return out


# Each thread of the kernel's backward sums its own pointwise-weight gradient:
# 4 MiB a thread at 1024 x 1024 weights, the largest layer measured. There,
# 16x7x7x1024 -> 1024, the training step's peak memory was 34.5 / 37.0 MiB
# against 49.6 / 52.7 MiB with PyTorch's backward, for 4-6% more time
# (35.6 against 34.2 ms at 2 threads, 66.1 against 62.4 ms at 1 thread).
# Larger layers, unmeasured, keep PyTorch's backward.
NATIVE_BACKWARD_MAX_WEIGHTS = 1 << 20
# Each thread holds one image's depthwise-output gradient.
NATIVE_BACKWARD_MAX_IMAGE_BYTES = 16 << 20


def _kernel_takes_backward(x, pointwise_weights, out_size):
    """Whether a training step's backward runs in the kernel (its forward does).

    Not taken: fewer images than threads (whole images per thread would
    leave one idle), and layers above the two limits above.
    """
    n, c = x.shape[:2]
    image_bytes = out_size[0] * out_size[1] * c * x.element_size()
    return (n >= torch.get_num_threads()
            and c * pointwise_weights.shape[3] <= NATIVE_BACKWARD_MAX_WEIGHTS
            and image_bytes <= NATIVE_BACKWARD_MAX_IMAGE_BYTES)


def _kernel_gradients(library, geometry, x, depthwise_weights, pointwise_weights, biases,
                      grad_out, out, activation):
    """A training step's gradients from the kernel, each in its input's layout (NHWC order for x)."""
    n, c, h, w = x.shape
    kh, kw = depthwise_weights.shape[:2]
    packed_t = native.pack_pointwise(library, pointwise_matrix(pointwise_weights),
                                     transposed=True, allocate=functools.partial(_pooled, x))
    grad_x = _pooled(x, (n, h, w, c))
    grad_out = grad_out.contiguous()
    grad_depthwise, grad_weights, grad_biases = native.separable_backward(
        library, x, depthwise_weights.reshape(kh, kw, c).contiguous(), packed_t, grad_out,
        grad_out if out is None else out, grad_x, geometry, activation,
        biases is not None)  # (the kernel reads ``out`` only for an activation)
    return (grad_x.permute(0, 3, 1, 2), grad_depthwise.view(depthwise_weights.shape),
            grad_weights.view(pointwise_weights.shape), grad_biases)


def _inference_weights(depthwise_weights, pointwise_weights):
    """:func:`_native_weights`, cached per weight version (no gradient flows at inference)."""
    return _cached(("native",), (depthwise_weights, pointwise_weights), _native_weights)


def _native_weights(depthwise_weights, pointwise_weights, allocate=None):
    """The kernel's weight layouts: depthwise ``[kh, kw, c]``, pointwise packed in panels.

    ``allocate``: as :func:`native.pack_pointwise`'s, for the panels.
    """
    return (depthwise_weights.reshape(depthwise_weights.shape[:3]).contiguous(),
            native.pack_pointwise(native.load(), pointwise_matrix(pointwise_weights),
                                  allocate=allocate))


def _pooled(like, shape):
    return buffers.large_empty(shape, like, KERNEL_POOL_BYTES)


def separable_conv2d(inputs, depthwise_weights, pointwise_weights=None, biases=None, *,
                     stride=(1, 1), rate=(1, 1), padding="SAME", data_format="NHWC",
                     activation=None):
    """Depthwise conv, then an optional pointwise conv, bias and activation.

    Args:
        inputs: 4-D tensor in ``data_format``.
        depthwise_weights: ``[kh, kw, cin, m]``.
        pointwise_weights: ``[1, 1, cin*m, out]`` or None for depthwise only.
        biases: ``[channels_out]`` or None.
        stride, rate: ints or (height, width) pairs; the stride applies to
            the depthwise stage only.
        padding: ``'SAME'`` or ``'VALID'``, any case.
        data_format: ``'NHWC'`` or ``'NCHW'``.
        activation: None, ``'relu'`` or ``'relu6'``, applied in place after
            the bias (the same numbers as ``torch.relu`` / ``F.relu6``).

    Returns:
        The output, shaped for ``data_format``. Its memory is NHWC-ordered
        either way (an NCHW result is a ``channels_last`` tensor).

    Raises:
        ValueError: on an unknown ``activation``, ``padding`` or
            ``data_format``, a stride or rate below 1, an empty image, operands
            whose shapes do not fit each other (the input's channels, the
            weights' and the biases'), or from :func:`conv_geometry`.
        TypeError: on weights or biases of another dtype than ``inputs``
            (after ``torch.autocast``, which casts float32 operands to its
            dtype), or a stride or rate that is not an int or a pair of ints.

    Shape:
        SAME: ``out = ceil(in / stride)``. VALID:
        ``out = floor((in - (k - 1) * rate - 1) / stride) + 1``.

    Example:
        >>> x = torch.ones(1, 4, 4, 2)
        >>> dw, pw = torch.ones(3, 3, 2, 1), torch.ones(1, 1, 2, 3)
        >>> y = separable_conv2d(x, dw, pw, torch.zeros(3), stride=(2, 2))
        >>> y[0, :, :, 0].tolist()  # TF pads bottom/right only: 3x3, 3x2, 2x2 windows
        [[18.0, 12.0], [12.0, 8.0]]
    """
    if _autocasting(inputs.device):
        inputs, depthwise_weights, pointwise_weights, biases = _autocast(
            inputs.device, inputs, depthwise_weights, pointwise_weights, biases)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad
        for t in (inputs, depthwise_weights, pointwise_weights, biases))
    signature = None if needs_grad else _signature(inputs, depthwise_weights, pointwise_weights,
                                                   biases, stride, rate, padding, data_format,
                                                   activation)
    repeat = _REPEATS.get(signature) if signature is not None else None
    if repeat is not None:
        out = repeat(inputs, depthwise_weights, pointwise_weights, biases)
        if out is not None:
            return out
    _check_activation(activation)
    data_format, padding = utils.data_format(data_format), utils.padding_mode(padding)
    stride, rate = utils.pair(stride, "stride"), utils.pair(rate, "rate")
    _check_operands(inputs, data_format, depthwise_weights, pointwise_weights, biases)
    spatial = image_size(inputs, data_format)
    pads, (out_h, out_w), (conv_padding, lead_zeros, needs_pad) = _plan(
        tuple(spatial), tuple(depthwise_weights.shape[:2]), tuple(stride), tuple(rate), padding)
    x = _as_channels_last_nchw(inputs, data_format)
    library = _native_library(x, depthwise_weights, pointwise_weights, biases)
    # _torch_rows' arguments after the operands: a tuple, as the kernel's inference needs none.
    torch_args = (tuple(stride), tuple(rate), pads, (out_h, out_w),
                  (conv_padding, lead_zeros, needs_pad), activation, needs_grad)
    if library is None:
        rows = _torch_rows(x, depthwise_weights, pointwise_weights, biases, *torch_args)
    else:
        # The kernel reads NHWC memory: a strided input pays one copy, here,
        # for the forward and the backward alike (as oneDNN's conv does on
        # the PyTorch path).
        x = x.contiguous(memory_format=torch.channels_last)
        (top, _), (left, _) = pads
        geometry = (tuple(stride), tuple(rate), (top, left), (out_h, out_w))
        if not needs_grad:
            rows = _native_rows(library, x, depthwise_weights, pointwise_weights, biases,
                                geometry, activation, False)
            if (signature is not None
                    and 0 < rows.numel() * rows.element_size() < KERNEL_POOL_BYTES):
                _record(signature, _Repeat(library, x, depthwise_weights, rows.shape[1],
                                           geometry, activation, data_format))
        elif _kernel_takes_backward(x, pointwise_weights, (out_h, out_w)):
            rows = _KernelSeparableFunction.apply(
                x, depthwise_weights, pointwise_weights, biases, library, geometry, activation,
                lambda *operands: _torch_rows(*operands, *torch_args))
        else:
            rows = _torch_rows(x, depthwise_weights, pointwise_weights, biases, *torch_args,
                               native_forward=functools.partial(
                                   _native_rows, library, x, depthwise_weights, pointwise_weights,
                                   biases, geometry, activation, True))
    out = rows.view(inputs.shape[0], out_h, out_w, rows.shape[1])
    return out if data_format == "NHWC" else out.permute(0, 3, 1, 2)


def _check_operands(inputs, data_format, depthwise_weights, pointwise_weights, biases):
    """The operands against each other: dtypes, and shapes (the kernel would read past a short one)."""
    for argument, tensor in (("depthwise_weights", depthwise_weights),
                             ("pointwise_weights", pointwise_weights), ("biases", biases)):
        if tensor is not None and tensor.dtype != inputs.dtype:
            raise TypeError(f"{argument} has dtype {tensor.dtype}, but inputs have "
                            f"{inputs.dtype}: convert one to the other's (a module with "
                            f"module.to(dtype)).")
    channels = _shape_of("inputs", inputs, data_format)[3 if data_format == "NHWC" else 1]
    kh, kw, weight_channels, multiplier = _shape_of("depthwise_weights", depthwise_weights,
                                                    "[kh, kw, in_channels, multiplier]")
    if 0 in (kh, kw, multiplier):
        raise ValueError(f"depthwise_weights must not have zero elements (TF's filter rule), got "
                         f"shape {list(depthwise_weights.shape)}.")
    if weight_channels != channels:
        raise ValueError(f"depthwise_weights has {weight_channels} input channels "
                         f"(shape {list(depthwise_weights.shape)}), but inputs have {channels}.")
    channels_out = channels * multiplier
    if pointwise_weights is not None:
        one, one_too, depth, channels_out = _shape_of("pointwise_weights", pointwise_weights,
                                                      "[1, 1, in_channels * multiplier, out]")
        if (one, one_too, depth) != (1, 1, channels * multiplier):
            raise ValueError(f"pointwise_weights must have shape [1, 1, {channels * multiplier}, "
                             f"out] for these depthwise_weights, got "
                             f"{list(pointwise_weights.shape)}.")
    if biases is not None and tuple(biases.shape) != (channels_out,):
        raise ValueError(f"biases must have shape [{channels_out}] (the output channels), got "
                         f"{list(biases.shape)}.")


def _autocasting(device):
    """Whether ``torch.autocast`` casts ops on ``device`` (never on one it does not know, as meta)."""
    if not _any_autocast():  # the common case, in one call: this runs on every call
        return False
    return torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type)


_any_autocast = getattr(torch._C, "_is_any_autocast_enabled", lambda: True)


def _autocast(device, *operands):
    """The operands as autocast gives them to a convolution: float32 ones in its dtype.

    Cast once, here, so that the forward, the saved tensors and the backward
    (which runs outside autocast) all see one dtype, whichever path runs.
    """
    dtype = torch.get_autocast_dtype(device.type)
    return tuple(t.to(dtype) if t is not None and t.dtype == torch.float32 else t
                 for t in operands)


def _shape_of(argument, tensor, expected):
    if tensor.dim() != 4:
        raise ValueError(f"{argument} must be 4-D {expected}, got shape {list(tensor.shape)}.")
    return tuple(tensor.shape)


# ----------------------------------------------------------------------------
# Repeated small inference calls
# ----------------------------------------------------------------------------
# Below the pool's size a call is mostly Python: 1x2x2x8 -> 8 took 24 us, of
# which the kernel took 2 us. A no-gradient call that the kernel ran records
# what its signature alone decides: the output shape and the kernel's
# parameter block. A repeat of the signature then checks only what depends on
# the tensors themselves (dtype, device, memory layout, weight versions) and
# calls the kernel. Only a call that passed every check of the general path
# is recorded, so a repeat accepts nothing the general path would refuse.
_REPEATS = {}


def _signature(inputs, depthwise_weights, pointwise_weights, biases, stride, rate, padding,
               data_format, activation):
    """A no-gradient call's key in ``_REPEATS``, or None for a call never recorded."""
    if (pointwise_weights is None or type(stride) is not tuple or type(rate) is not tuple
            or len(stride) != 2 or len(rate) != 2
            or not type(stride[0]) is type(stride[1]) is type(rate[0]) is type(rate[1]) is int):
        return None  # (lists would not hash, and 1.0 == True == 1: the general path checks them)
    if _only_torch_ops():
        return None
    return (inputs.shape, depthwise_weights.shape, pointwise_weights.shape,
            None if biases is None else biases.shape, stride, rate, padding, data_format,
            activation)


def _record(signature, repeat):
    if len(_REPEATS) >= 1024:  # signatures seen by a long-lived process stay bounded
        _REPEATS.clear()
    _REPEATS[signature] = repeat


class _Repeat:
    """A recorded kernel call, run again for a repeat of its signature."""

    __slots__ = ("library", "params", "shape", "nchw", "layout")

    def __init__(self, library, x, depthwise_weights, channels_out, geometry, activation,
                 data_format):
        # Outputs this small are neither pooled nor streamed (see _native_rows).
        self.library = library
        self.params = native.layer_params(x.shape, tuple(depthwise_weights.shape[:2]),
                                          channels_out, geometry, activation, False)
        self.shape = (x.shape[0], *geometry[3], channels_out)
        self.nchw = data_format == "NCHW"
        # The kernel reads NHWC memory: an NCHW tensor must be channels_last.
        self.layout = torch.channels_last if self.nchw else torch.contiguous_format

    def __call__(self, inputs, depthwise_weights, pointwise_weights, biases):
        """The output, or None where these tensors need the general path."""
        if not (_kernel_dtype_and_device(inputs, depthwise_weights, pointwise_weights, biases)
                and inputs.is_contiguous(memory_format=self.layout)
                and (biases is None or biases.is_contiguous())):
            return None
        depthwise, packed = _inference_weights(depthwise_weights, pointwise_weights)
        out = inputs.new_empty(self.shape)
        native.forward_with(self.library, self.params, inputs, depthwise, packed, biases, out)
        return out.permute(0, 3, 1, 2) if self.nchw else out


# TF keeps batch norm's variables in float32 for these inputs, and its fused kernel computes in it.
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def batch_norm_dtype(dtype):
    """The dtype of batch norm's variables for inputs of ``dtype``, as TF's layer makes them."""
    return torch.float32 if dtype in _HALF_DTYPES else dtype


def batch_norm(inputs, beta, gamma, moving_mean, moving_variance, *, decay, epsilon,
               is_training, channel_axis, fused=None):
    """contrib's batch norm over every axis but ``channel_axis``.

    In training the batch statistics normalise (biased variance) and the
    moving statistics are updated in place as ``moving = moving * decay +
    batch * (1 - decay)``, i.e. PyTorch's ``momentum = 1 - decay``. The moving
    variance takes the Bessel-corrected batch variance (``n / max(n - 1, 1)``)
    where TF runs its fused kernel (``fused`` None or True, and float16,
    bfloat16 or float32 inputs), else the biased one, as TF's non-fused ops
    (``fused=False``, or float64). float16 and bfloat16 inputs are normalised
    in float32, as by TF's fused kernel, and the output is cast back.

    Args:
        beta, gamma: ``[C]`` tensors or None (no centre / no scale).
        moving_mean, moving_variance: ``[C]`` tensors, updated in training.
        fused: TF's ``fused`` argument: None or True for its fused kernel
            where one exists, False for its non-fused ops.

    Returns:
        The normalised tensor, shaped and typed like ``inputs``.
    """
    axis = channel_axis % inputs.dim()
    x = inputs.float() if inputs.dtype in _HALF_DTYPES else inputs
    reduce_dims = [d for d in range(x.dim()) if d != axis]
    shape = [1] * x.dim()
    shape[axis] = -1
    if is_training:
        variance, mean = _batch_moments(x, reduce_dims, axis)
        count = x.numel() // max(x.shape[axis], 1)
        corrected = runs_fused_kernel(inputs.dtype, fused)
        with torch.no_grad():
            bessel = count / max(count - 1, 1) if corrected else 1.0
            moving_mean.mul_(decay).add_(mean.detach().to(moving_mean.dtype), alpha=1 - decay)
            moving_variance.mul_(decay).add_((variance.detach() * bessel).to(moving_variance.dtype),
                                             alpha=1 - decay)
    else:
        mean, variance = moving_mean, moving_variance
    scale, shift = _scale_and_shift(mean, variance, epsilon, gamma, beta)
    outputs = x * scale.view(shape) + shift.view(shape)
    return outputs.to(inputs.dtype) if inputs.dtype in _HALF_DTYPES else outputs


def runs_fused_kernel(dtype, fused):
    """Whether TF runs its fused kernel (``fused`` None or True) for inputs of ``dtype``."""
    return fused is not False and dtype != torch.float64


def _scale_and_shift(mean, variance, epsilon, gamma, beta, biases=None):
    """``bn(y + b) = y * scale + shift`` for statistics ``mean``, ``variance``."""
    scale = torch.rsqrt(variance + epsilon)
    if gamma is not None:
        scale = scale * gamma
    shift = -mean * scale if biases is None else (biases - mean) * scale
    return scale, shift if beta is None else shift + beta


def _batch_moments(inputs, reduce_dims, axis):
    """Biased variance and mean; NaN for an empty batch, as TF gives, without torch's warning."""
    if inputs.numel() == 0:
        nan = inputs.new_full((inputs.shape[axis],), float("nan"))
        return nan, nan
    return torch.var_mean(inputs, dim=reduce_dims, correction=0)


def fold_batch_norm(pointwise_weights, biases, moving_mean, moving_variance, beta, gamma, epsilon):
    """Inference batch norm folded into the pointwise weights and bias.

    ``bn(y @ W + b) = y @ (W * s) + (b - mean) * s + beta`` with
    ``s = gamma / sqrt(variance + epsilon)``, so the normalizer costs nothing
    at inference. The result is cached per version of every input tensor
    when no gradient flows.

    Args:
        pointwise_weights: ``[1, 1, cin*m, out]``.
        biases: ``[out]`` or None.
        moving_mean, moving_variance: ``[out]``.
        beta, gamma: ``[out]`` or None.
        epsilon: added to the variance.

    Returns:
        ``(pointwise_weights, biases)``, the folded pair, same layouts.
    """
    def fold(w, b, mean, var, shift, g):
        scale, bias = _scale_and_shift(mean, var, epsilon, g, shift, b)
        return w * scale, bias

    return _cached(("fold_bn", float(epsilon)),
                   (pointwise_weights, biases, moving_mean, moving_variance, beta, gamma), fold)


__all__ = ["EPILOGUE_ACTIVATIONS", "batch_norm", "batch_norm_dtype", "conv_geometry", "depthwise_conv2d_nchw",
           "depthwise_kernel", "fold_batch_norm", "fusable_activation", "image_size", "output_shape",
           "pointwise_matrix", "same_padding", "separable_conv2d"]


# ----------------------------------------------------------------------------
# slim's companions of the separable layer: full convolution and pooling
# ----------------------------------------------------------------------------
def image_size(inputs, data_format, argument="inputs"):
    """``(height, width)`` of ``inputs``; an empty image raises (only the batch may be empty).

    Raises:
        ValueError: a height or width of 0, which TF's shape inference refuses.
    """
    spatial = tuple(inputs.shape[1:3] if data_format == "NHWC" else inputs.shape[2:4])
    if 0 in spatial:
        raise ValueError(f"Invalid {argument} shape {list(inputs.shape)}: height and width "
                         "must be at least 1 (only the batch may be empty).")
    return spatial


def _as_nchw_view(inputs, data_format):
    return _nhwc_as_nchw(inputs) if data_format == "NHWC" else inputs


def _from_nchw_view(outputs, data_format):
    return outputs.permute(0, 2, 3, 1) if data_format == "NHWC" else outputs


def _pad_nchw(x, pads, value=0.0):
    (top, bottom), (left, right) = pads
    return F.pad(x, (left, right, top, bottom), value=value)


def conv2d(inputs, weights, biases=None, *, stride=(1, 1), rate=(1, 1), padding="SAME",
           data_format="NHWC"):
    """A full 2-D convolution with TF's padding and TF-layout weights.

    Args:
        inputs: 4-D tensor in ``data_format``.
        weights: ``[kh, kw, cin, out]`` (TF's layout).
        biases: ``[out]`` or None.
        stride, rate: (height, width) pairs.
        padding: ``'SAME'`` or ``'VALID'``.
        data_format: ``'NHWC'`` or ``'NCHW'``.

    Returns:
        The output in ``data_format``.

    Raises:
        ValueError: from :func:`conv_geometry`.

    Shape:
        As :func:`separable_conv2d`, with ``out`` channels.

    Example:
        >>> x = torch.ones(1, 4, 4, 1)
        >>> y = conv2d(x, torch.ones(3, 3, 1, 1), stride=(2, 2))
        >>> y[0, :, :, 0].tolist()  # TF pads bottom/right only: 3x3, 3x2, 2x2 windows
        [[9.0, 6.0], [6.0, 4.0]]
    """
    kernel = tuple(weights.shape[:2])
    pads, _ = conv_geometry(image_size(inputs, data_format), kernel, stride, rate, padding)
    if kernel == (1, 1) and tuple(stride) == (1, 1) and data_format == "NHWC":
        # A 1x1 convolution in NHWC is one GEMM on the stored weight, as the pointwise stage.
        n, h, w, cin = inputs.shape
        rows = inputs.reshape(n * h * w, cin)
        matrix = weights.reshape(cin, weights.shape[3])
        rows = torch.mm(rows, matrix) if biases is None else torch.addmm(biases, rows, matrix)
        return rows.view(n, h, w, matrix.shape[1])
    x = _as_nchw_view(inputs, data_format)
    (top, bottom), (left, right) = pads
    if top == bottom and left == right:
        conv_padding = (top, left)
    else:  # TF's odd SAME pixel goes bottom/right, which symmetric padding cannot say
        x, conv_padding = _pad_nchw(x, pads), (0, 0)
    y = F.conv2d(x, weights.permute(3, 2, 0, 1), biases, tuple(stride), conv_padding, tuple(rate))
    return _from_nchw_view(y, data_format)


def avg_pool2d(inputs, kernel, *, stride, padding, data_format="NHWC"):
    """TF's average pooling: SAME divides each window by its count of real pixels.

    Padded positions are not counted (unlike ``count_include_pad=True``),
    also where TF pads one more pixel at the bottom/right.

    Args:
        inputs: 4-D tensor in ``data_format``.
        kernel, stride: (height, width) pairs.
        padding: ``'SAME'`` or ``'VALID'``.
        data_format: ``'NHWC'`` or ``'NCHW'``.

    Returns:
        The pooled tensor in ``data_format``.

    Raises:
        ValueError: a VALID input smaller than the kernel.

    Example:
        >>> x = torch.arange(9.0).view(1, 3, 3, 1)
        >>> avg_pool2d(x, (2, 2), stride=(2, 2), padding="SAME")[0, :, :, 0].tolist()
        [[2.0, 3.5], [6.5, 8.0]]
    """
    pads, _ = conv_geometry(image_size(inputs, data_format), kernel, stride, (1, 1), padding)
    x = _as_nchw_view(inputs, data_format)
    if not any(before or after for before, after in pads):
        return _from_nchw_view(F.avg_pool2d(x, tuple(kernel), tuple(stride)), data_format)
    # Exact window sums over zero padding, divided by the exact counts of real pixels.
    sums = F.avg_pool2d(_pad_nchw(x, pads), tuple(kernel), tuple(stride), divisor_override=1)
    mask = _pad_nchw(x.new_ones((1, 1) + tuple(x.shape[2:])), pads)
    counts = F.avg_pool2d(mask, tuple(kernel), tuple(stride), divisor_override=1)
    return _from_nchw_view(sums / counts, data_format)


def max_pool2d(inputs, kernel, *, stride, padding, data_format="NHWC"):
    """TF's max pooling: SAME pads with -inf, the odd pixel at the bottom/right.

    Args:
        inputs: 4-D tensor in ``data_format``.
        kernel, stride: (height, width) pairs.
        padding: ``'SAME'`` or ``'VALID'``.
        data_format: ``'NHWC'`` or ``'NCHW'``.

    Returns:
        The pooled tensor in ``data_format``.

    Raises:
        ValueError: a VALID input smaller than the kernel.

    Example:
        >>> x = torch.arange(9.0).view(1, 3, 3, 1)
        >>> max_pool2d(x, (2, 2), stride=(2, 2), padding="SAME")[0, :, :, 0].tolist()
        [[4.0, 5.0], [7.0, 8.0]]
    """
    pads, _ = conv_geometry(image_size(inputs, data_format), kernel, stride, (1, 1), padding)
    x = _as_nchw_view(inputs, data_format)
    if any(before or after for before, after in pads):
        x = _pad_nchw(x, pads, value=float("-inf"))
    return _from_nchw_view(F.max_pool2d(x, tuple(kernel), tuple(stride)), data_format)


__all__ += ["avg_pool2d", "conv2d", "max_pool2d"]
