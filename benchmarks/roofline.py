"""The hardware limits, measured in the same run: GEMM peak and copy bandwidth."""
import torch

from .timing import time_calls


def gemm_peak_flops(size=1024, repeats=40):
    """FLOP/s of ``torch.mm`` on ``size x size`` float32 (oneDNN/MKL at full speed)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    step = lambda: torch.mm(a, b, out=out)  # noqa: E731
    time_calls(step, 3)
    # A peak: the best of the repeats, not the median (a busy neighbour only slows it).
    return 2 * size ** 3 / min(time_calls(step, repeats))


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
