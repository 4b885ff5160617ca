"""Scale: a 1x1024x1024x64 input runs within a stated memory bound; no int32 index overflow.

Memory is measured in one fresh subprocess, so neither the test runner nor
earlier tests pollute it: after a warm-up call (which loads the kernels) the
peak-RSS counter is reset (``/proc/self/clear_refs``), then the input is
created and the layer runs; the tensors are freed before the next case. The bound is on the growth of the peak RSS over
the RSS before the input existed, as a multiple of input + output + weights
bytes. Measured on the 2-core CI machine (torch 2.13 CPU), in MiB (the
backward recomputes the depthwise stage instead of keeping it; before that
change forward + backward measured 1284 MiB, 2.51x):

===============================  =====  ======  ======  =====  =====
case                             input  output  growth  ratio  bound
===============================  =====  ======  ======  =====  =====
NHWC forward, stride 1           256    256     768     1.50   2.0
NHWC forward, stride 2           256    64      384     1.20   2.0
NCHW forward (one layout copy)   256    256     1024    2.00   2.5
NHWC forward + backward          256    256     1027    2.01   3.0
===============================  =====  ======  ======  =====  =====

Index arithmetic: the layer computes every size and padding with Python ints
and indexes through torch, whose CPU kernels switch to 64-bit indexing past
2**31 elements. Inputs of more than 2**31 elements (8 GiB in float32, too big
for CI) are run on the ``meta`` device, which executes the whole layer path
(validation, variables, geometry, the fast path's reshapes) on shapes only.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import sepconv as sc

MIB = 2 ** 20
INT32_MAX = 2 ** 31 - 1

CASES = {  # id: (data_format, stride, backward, bound)
    "nhwc-forward": ("NHWC", 1, False, 2.0),
    "nhwc-forward-stride2": ("NHWC", 2, False, 2.0),
    "nchw-forward": ("NCHW", 1, False, 2.5),
    "nhwc-forward-backward": ("NHWC", 1, True, 3.0),
}

MEASURE = textwrap.dedent("""
    import gc, json, sys
    import torch
    import sepconv as sc
    from sepconv._src import buffers

    def status(key):
        with open("/proc/self/status") as lines:
            return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(key))

    def reset_peak():
        try:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")  # resets VmHWM to the current RSS
            return True
        except OSError:
            return False  # then VmHWM also covers earlier peaks

    def run(data_format, stride, backward):
        shape = (1, 1024, 1024, 64) if data_format == "NHWC" else (1, 64, 1024, 1024)
        with sc.Graph().as_default():
            warm = torch.ones((1, 4, 4, 64) if data_format == "NHWC" else (1, 64, 4, 4))
            sc.separable_conv2d(warm, 64, 3, 1, stride=stride, data_format=data_format, scope="warm")
            buffers.release()  # each case measures a call that finds no recycled output
            gc.collect()
            before = status("VmRSS:")
            reset = reset_peak()
            x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
            with torch.set_grad_enabled(backward):
                y = sc.separable_conv2d(x, 64, 3, 1, stride=stride, data_format=data_format, scope="big")
                if backward:
                    y.sum().backward()
            peak = status("VmHWM:")
            weights = sum(v.numel() * v.element_size() for v in sc.global_variables("big"))
            return dict(growth=peak - before, input=x.numel() * x.element_size(),
                        output=y.numel() * y.element_size(), weights=weights,
                        finite=bool(torch.isfinite(y).all()), reset=reset)

    cases = json.loads(sys.argv[1])
    print(json.dumps({name: run(*case[:3]) for name, case in cases.items()}))
""")


def run_measurement(cases):
    result = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(cases)],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def measurements():
    if not os.path.exists("/proc/self/status"):
        pytest.skip("peak RSS is read from /proc/self/status")
    results = run_measurement(CASES)
    if not all(result["reset"] for result in results.values()):
        # Without a peak reset one process would carry a case's peak into the next: one each.
        results = {name: run_measurement({name: case})[name] for name, case in CASES.items()}
    return results


@pytest.mark.parametrize("case", sorted(CASES))
def test_large_input_peak_memory_is_a_small_multiple_of_the_tensors(measurements, case):
    data_format, stride, backward, bound = CASES[case]
    m = measurements[case]
    tensors = m["input"] + m["output"] + m["weights"]
    ratio = m["growth"] / tensors
    print(f"\n{case}: peak RSS growth {m['growth'] / MIB:.0f} MiB for input {m['input'] / MIB:.0f} + "
          f"output {m['output'] / MIB:.0f} MiB + weights {m['weights'] / 1024:.0f} KiB: "
          f"{ratio:.2f}x (bound {bound}x)")
    assert m["input"] == 256 * MIB and m["finite"]
    # The peak holds at least the input and the output (the weights, a few KiB,
    # may sit in pages counted before), so less means a broken measurement.
    assert m["growth"] >= m["input"] + m["output"]
    assert ratio <= bound


@pytest.mark.parametrize("shape, data_format", [
    ((1, 46350, 46350, 1), "NHWC"),     # 2.148e9 elements, one channel
    ((1, 16384, 16384, 9), "NHWC"),     # 2.4e9 elements
    ((3, 9, 16384, 16384), "NCHW"),
])
def test_inputs_beyond_int32_elements_get_exact_shapes(shape, data_format):
    x = torch.empty(shape, device="meta")
    assert x.numel() > INT32_MAX
    n, h, w, c = shape if data_format == "NHWC" else (shape[0], shape[2], shape[3], shape[1])
    with sc.Graph().as_default():
        y = sc.separable_conv2d(x, 5, 3, 2, stride=2, data_format=data_format, normalizer_fn=sc.batch_norm,
                                normalizer_params={"data_format": data_format})
        z = sc.separable_conv2d(x, None, [3, 1], 1, rate=[3, 1], padding="VALID", data_format=data_format)
    out = (n, -(-h // 2), -(-w // 2), 5)
    valid = (n, h - 6, w, c)
    to_format = (lambda s: s) if data_format == "NHWC" else (lambda s: (s[0], s[3], s[1], s[2]))
    assert tuple(y.shape) == to_format(out) and tuple(z.shape) == to_format(valid)
    assert z.numel() > INT32_MAX


def test_geometry_is_exact_far_beyond_int32():
    from sepconv._src import ops
    size = 2 ** 40 + 3
    shape = ops.output_shape((2, size, size, 7), (3, 3), (2, 2), (1, 1), "SAME", "NHWC", 11)
    assert shape == (2, 2 ** 39 + 2, 2 ** 39 + 2, 11)
    assert ops.same_padding(size, 3, 2, 1) == (1, 1)
    assert ops.output_shape((1, 7, size, size), (5, 5), (1, 1), (4, 4), "VALID", "NCHW", 7) == (
        1, 7, size - 16, size - 16)
