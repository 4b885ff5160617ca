"""The hardware limits, measured in the same run: GEMM peak and copy bandwidth."""
import torch

from .timing import time_calls


def gemm_peak_flops(shapes, repeats=20):
    """The best FLOP/s of ``torch.mm`` (MKL) over the float32 GEMMs ``shapes`` (``(m, k, n)``).

    One shape is not enough: on the AMD EPYC of docs/benchmarks.md, MKL ran
    1024^3 at 79 GFLOP/s on one core and 784 x 1024 x 1024 at 98 (2026-11-25).
    Even the best is no strict bound: other GEMM libraries can beat MKL.
    """
    return max(_mm_flops(*shape, repeats) for shape in shapes)


def _mm_flops(m, k, n, repeats):
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    step = lambda: torch.mm(a, b, out=out)  # noqa: E731
    time_calls(step, 3)
    # A peak: the best of the repeats, not the median (a busy neighbour only slows it).
    return 2 * m * k * n / min(time_calls(step, repeats))


def copy_bandwidth(megabytes=128, repeats=40):
    """Bytes/s of a large preallocated copy, counting read plus write."""
    count = megabytes * 2 ** 20 // 4
    src, dst = torch.randn(count), torch.empty(count)
    step = lambda: dst.copy_(src)  # noqa: E731
    time_calls(step, 3)
    return 2 * 4 * count / min(time_calls(step, repeats))


def floor_seconds(flops, nbytes, peak, bandwidth):
    """``max(FLOPs / GEMM peak, bytes / bandwidth)``."""
    return max(flops / peak, nbytes / bandwidth)
