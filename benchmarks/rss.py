"""Peak resident memory of a step, from Linux's /proc (no dependencies).

Shared by the sepconv process and the peer worker, which runs in another
virtual environment, so it imports nothing from the suite.
"""


def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def step_peak_bytes(step, warmup=1, steps=2):
    """Peak RSS above the RSS before the warm-up, over ``steps`` after ``warmup``.

    The warm-up lets each engine build its kernels (TF's graph, XLA's
    executable, oneDNN's primitives) outside the peak window; whatever it
    keeps resident still counts, as it would in a training loop.
    """
    base = _status_kib("VmRSS")
    for _ in range(warmup):
        step()
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
    for _ in range(steps):
        step()
    return max(_status_kib("VmHWM") - base, 0) * 1024
