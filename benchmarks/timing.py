"""Timing primitives shared by the in-process engines and the peer worker."""
import time


def time_calls(step, count):
    """Seconds taken by each of ``count`` calls of ``step`` (results are dropped)."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return 0.5 * (ordered[middle - 1] + ordered[middle])
