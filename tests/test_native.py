"""The compiled kernel (``sepconv._src.native``) against the float64 reference.

Every float32 call with depth multiplier 1 and a pointwise stage runs the
kernel's forward, and a training step on at least as many images as threads
with up to ``NATIVE_BACKWARD_MAX_WEIGHTS`` pointwise weights its backward;
these tests check that it does, that its numbers are the reference's within
float32 rounding on every geometry, and that everything it does not cover
goes to the PyTorch path.
"""
import contextlib
import os
import subprocess
import sys
import threading

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference
from sepconv._src import buffers, native, ops
from strategies import geometries


def test_kernel_is_compiled_and_loaded_on_this_machine():
    # Not a skip: without the kernel every other test here would pass vacuously.
    assert native.load() is not None, native.status()
    assert native.status().startswith("compiled kernel ")


@contextlib.contextmanager
def kernel_calls(entry="forward_with"):
    """Records the arguments of every call of the kernel's ``entry`` made inside the block."""
    calls, run = [], getattr(native, entry)

    def spy(*args):
        calls.append(args)
        return run(*args)

    setattr(native, entry, spy)
    try:
        yield calls
    finally:
        setattr(native, entry, run)


def _tensors(batch, height, width, channels, outputs, kernel, bias, data_format, seed,
             noncontiguous=False):
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, height, width, channels)
    x = torch.randn(shape, generator=gen)
    if data_format == "NCHW":
        x = x.permute(0, 3, 1, 2).contiguous()
    if noncontiguous:
        x = x.transpose(0, 1).contiguous().transpose(0, 1)
    dw = torch.randn(*kernel, channels, 1, generator=gen)
    pw = torch.randn(1, 1, channels, outputs, generator=gen)
    b = torch.randn(outputs, generator=gen) if bias else None
    return x, dw, pw, b


def _reference(x, dw, pw, b, activation, **kwargs):
    as64 = [None if t is None else t.double() for t in (x, dw, pw, b)]
    y = reference.separable_conv2d(*as64, **kwargs)
    if activation == "relu":
        return torch.relu(y)
    return y.clamp(0.0, 6.0) if activation == "relu6" else y


def _assert_float32_close(actual, expected):
    """float32 against float64: error relative to the output's scale."""
    assert actual.dtype == torch.float32 and actual.shape == expected.shape
    finite = expected[expected.isfinite()]
    scale = max(float(finite.abs().max()) if finite.numel() else 0.0, 1.0)
    torch.testing.assert_close(actual.double(), expected, rtol=2e-5, atol=2e-5 * scale,
                               equal_nan=True)


@st.composite
def kernel_cases(draw):
    kernel, stride, rate, padding, (height, width) = draw(geometries(max_kernel=5, max_extra=9))
    return dict(
        batch=draw(st.integers(1, 3)), height=height, width=width,
        # Channels below, at and past the kernel's 8- and 32-wide blocks; outputs past 16-wide panels.
        channels=draw(st.integers(1, 70)), outputs=draw(st.integers(1, 40)), kernel=kernel,
        bias=draw(st.booleans()), data_format=draw(st.sampled_from(["NHWC", "NCHW"])),
        noncontiguous=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 16)),
        call=dict(stride=stride, rate=rate, padding=padding),
        activation=draw(st.sampled_from([None, "relu", "relu6"])))


def _run(case):
    x, dw, pw, b = _tensors(case["batch"], case["height"], case["width"], case["channels"],
                            case["outputs"], case["kernel"], case["bias"], case["data_format"],
                            case["seed"], case["noncontiguous"])
    kwargs = dict(case["call"], data_format=case["data_format"])
    with kernel_calls() as calls, torch.no_grad():
        actual = ops.separable_conv2d(x, dw, pw, b, activation=case["activation"], **kwargs)
    _assert_float32_close(actual, _reference(x, dw, pw, b, case["activation"], **kwargs))
    return calls


@given(kernel_cases())
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_kernel_matches_reference(case):
    assert len(_run(case)) == 1


@given(kernel_cases(), st.integers(1, 80))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_3x3_kernel_interior_paths_match_reference(case, channels):
    """3x3 on images wide enough for the interior paths: with column stride 1 and rate 1 or 2,
    8 and 4 pixels at a time with their input columns shared; otherwise, up to 32 channels, the
    weights held in registers along the row, and above 32 two pixels per weight load."""
    rate_h, rate_w = case["call"]["rate"]  # room for the dilated 3x3 window, also under VALID
    case = dict(case, kernel=(3, 3), channels=channels, height=case["height"] + 2 * rate_h,
                width=case["width"] + 2 * rate_w + 8)
    assert len(_run(case)) == 1


@pytest.mark.parametrize("batch, size, channels, outputs, stride", [
    (1, 3, 1100, 20, (2, 1)),   # K above one GEMM pass (1024): partial sums stored and reloaded
    (1, 7, 64, 1000, (2, 1)),   # few rows, many weight panels: the two-phase schedule
    (4, 30, 40, 33, (2, 1)),    # many rows: depthwise tiles fused into their GEMM
    # Fused tiles whose GEMM brings the next tile's input rows into L2 (column
    # stride 2: no 8-pixel path), and 128 channels, whose 8-pixel path reads
    # 6 lines of one L1 set.
    (2, 64, 256, 24, (2, 2)),
    (2, 24, 128, 20, (1, 1)),
])
def test_kernel_schedules_match_reference(batch, size, channels, outputs, stride):
    case = dict(batch=batch, height=size, width=size, channels=channels, outputs=outputs,
                kernel=(3, 3), bias=True, data_format="NHWC", noncontiguous=False, seed=3,
                call=dict(stride=stride, rate=(1, 1), padding="SAME"), activation="relu")
    assert len(_run(case)) == 1


def test_outputs_beyond_the_cache_are_streamed_and_correct():
    x, dw, pw, b = _tensors(1, 128, 128, 16, 512, (3, 3), True, "NHWC", seed=5)  # 32 MiB out
    with kernel_calls() as calls, torch.no_grad():
        actual = ops.separable_conv2d(x, dw, pw, b, stride=(1, 1), activation="relu6")
    assert calls[0][1][16] == 1  # the parameter block's stream flag
    _assert_float32_close(actual, _reference(x, dw, pw, b, "relu6", stride=(1, 1)))
    del actual
    buffers.release()


# Few rows: the GEMM split over rows and panels; many rows: fused tiles. More
# threads than this machine's 2 cores make the threads steal each other's items.
@pytest.mark.parametrize("shape, stride", [((2, 17, 15, 48, 40), 2), ((4, 40, 40, 16, 24), 1)])
@pytest.mark.parametrize("threads", [2, 3, 4])
def test_thread_count_does_not_change_a_bit(threads, shape, stride):
    x, dw, pw, b = _tensors(*shape, (3, 3), True, "NHWC", seed=9)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.separable_conv2d(x, dw, pw, b, stride=(stride, stride), activation="relu")
        torch.set_num_threads(threads)
        many = ops.separable_conv2d(x, dw, pw, b, stride=(stride, stride), activation="relu")
    finally:
        torch.set_num_threads(saved)
    assert torch.equal(one, many)


@pytest.mark.parametrize("where", ["input", "depthwise", "pointwise"])
@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_non_finite_values_propagate_as_the_reference(where, bad):
    """A padded pixel enters the sum as 0 * w, as in TF: an infinite weight next to padding is NaN."""
    x, dw, pw, b = _tensors(1, 6, 6, 9, 5, (3, 3), True, "NHWC", seed=2)
    {"input": lambda: x.__setitem__((0, 5, 0, 3), bad),
     "depthwise": lambda: dw.__setitem__((2, 2, 3, 0), bad),
     "pointwise": lambda: pw.__setitem__((0, 0, 3, 1), bad)}[where]()
    with kernel_calls() as calls:
        actual = ops.separable_conv2d(x, dw, pw, b, stride=(2, 2), activation="relu")
    assert len(calls) == 1
    expected = _reference(x, dw, pw, b, "relu", stride=(2, 2))
    assert not expected.isfinite().all()
    assert torch.equal(actual.isnan(), expected.isnan())
    assert torch.equal(actual.isinf(), expected.isinf())
    _assert_float32_close(actual, expected)


def test_cached_weight_layouts_follow_in_place_updates():
    x, dw, pw, b = _tensors(1, 8, 8, 12, 20, (3, 3), True, "NHWC", seed=4)
    for update in (lambda: None, lambda: pw.mul_(-0.5), lambda: dw.add_(1.0), lambda: b.zero_()):
        update()
        with kernel_calls() as calls:
            actual = ops.separable_conv2d(x, dw, pw, b, activation="relu")
        assert len(calls) == 1
        _assert_float32_close(actual, _reference(x, dw, pw, b, "relu"))


@pytest.mark.parametrize("compiled", [True, False])
def test_fingerprint_follows_contents_and_spans_strided_tensors(compiled, monkeypatch):
    if not compiled:
        monkeypatch.setattr(native, "load", lambda: None)  # the pure-Python fallback
    for tensor in (torch.arange(1.0, 2.0), torch.randn(3, 5), torch.randn(64, 300),
                   torch.randn(40, 70).t(), torch.randn(2, 9, 9, 16).permute(0, 3, 1, 2)):
        first = native.fingerprint(tensor)
        assert native.fingerprint(tensor.clone(memory_format=torch.preserve_format)) == first
        tensor.mul_(-3.0)  # a write to every element, as an optimizer step
        second = native.fingerprint(tensor)
        assert second != first
        tensor[(-1,) * tensor.dim()] += 1.0  # the last word of the memory is always sampled
        assert native.fingerprint(tensor) != second
    assert native.fingerprint(torch.empty(0)) is None
    assert native.fingerprint(torch.empty(4, device="meta")) is None


@contextlib.contextmanager
def general_path_refused():
    """Fails any call inside the block that works out its geometry (the general path)."""
    def refuse(*args):
        raise AssertionError("the general path ran")

    saved, ops._plan = ops._plan, refuse
    try:
        yield
    finally:
        ops._plan = saved


def _repeatable(case):
    """The case's tensors, NCHW input in channels_last memory (what the kernel reads)."""
    x, dw, pw, b = _tensors(case["batch"], case["height"], case["width"], case["channels"],
                            case["outputs"], case["kernel"], case["bias"], "NHWC", case["seed"])
    return (x.permute(0, 3, 1, 2) if case["data_format"] == "NCHW" else x), dw, pw, b


@given(kernel_cases())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_repeated_call_runs_its_recorded_kernel_call_with_the_same_bits(case):
    x, dw, pw, b = _repeatable(case)
    kwargs = dict(case["call"], data_format=case["data_format"], activation=case["activation"])
    with torch.no_grad():
        first = ops.separable_conv2d(x, dw, pw, b, **kwargs)
        with general_path_refused(), kernel_calls() as calls:
            again = ops.separable_conv2d(x, dw, pw, b, **kwargs)
    assert len(calls) == 1
    assert again.shape == first.shape and again.stride() == first.stride()
    assert torch.equal(again, first)


def _recorded(x, dw, pw, b, data_format="NHWC"):
    with torch.no_grad():  # records the call's signature
        ops.separable_conv2d(x, dw, pw, b, activation="relu", data_format=data_format)
    return x, dw, pw, b


@pytest.mark.parametrize("variant", ["float64", "strided input", "gradient", "nchw memory"])
def test_a_repeat_with_other_tensors_runs_the_general_path(variant):
    x, dw, pw, b = _recorded(*_tensors(1, 7, 7, 12, 20, (3, 3), True, "NHWC", seed=8))
    data_format = "NHWC"
    if variant == "float64":
        x, dw, pw, b = (t.double() for t in (x, dw, pw, b))
    elif variant == "strided input":
        x = torch.randn(1, 7, 14, 12)[:, :, ::2]
    elif variant == "gradient":
        pw.requires_grad_(True)
    else:  # the signature recorded for NCHW input in NHWC memory
        _recorded(x.permute(0, 3, 1, 2), dw, pw, b, "NCHW")
        x, data_format = x.permute(0, 3, 1, 2).contiguous(), "NCHW"
    actual = ops.separable_conv2d(x, dw, pw, b, activation="relu", data_format=data_format)
    assert actual.requires_grad == (variant == "gradient")
    expected = _reference(x, dw, pw, b, "relu", data_format=data_format)
    torch.testing.assert_close(actual.detach().double(), expected, rtol=1e-5, atol=1e-5)


def test_layers_of_the_same_shapes_share_a_signature_not_their_weights():
    """MobileNet v1 has five 14x14x512 layers: one recorded call, each layer's own weights."""
    x = _tensors(1, 6, 6, 8, 24, (3, 3), True, "NHWC", seed=13)[0]
    layers = [_tensors(1, 6, 6, 8, 24, (3, 3), True, "NHWC", seed=seed)[1:] for seed in (14, 15)]
    with torch.no_grad():
        firsts = [ops.separable_conv2d(x, *weights, activation="relu") for weights in layers]
        with general_path_refused():
            repeats = [ops.separable_conv2d(x, *weights, activation="relu") for weights in layers]
    assert not torch.equal(firsts[0], firsts[1])
    for first, repeat in zip(firsts, repeats):
        assert torch.equal(repeat, first)


def test_a_repeat_with_biases_of_another_shape_is_rejected():
    x, dw, pw, _ = _recorded(*_tensors(1, 6, 6, 8, 24, (3, 3), True, "NHWC", seed=12))
    with pytest.raises(ValueError, match=r"biases must have shape \[24\]"):
        ops.separable_conv2d(x, dw, pw, torch.randn(23), activation="relu")


def test_a_repeat_reads_its_weights_as_they_are_now():
    x, dw, pw, b = _recorded(*_tensors(1, 6, 6, 8, 24, (3, 3), True, "NHWC", seed=12))
    for update in (lambda: pw.mul_(-0.5), lambda: dw.add_(1.0), lambda: b.zero_(),
                   lambda: setattr(pw, "data", torch.randn(pw.shape))):
        update()
        with general_path_refused(), torch.no_grad():
            actual = ops.separable_conv2d(x, dw, pw, b, activation="relu")
        _assert_float32_close(actual, _reference(x, dw, pw, b, "relu"))


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 70), cols=st.integers(1, 70), transposed=st.booleans())
def test_weight_panels_hold_the_matrix_and_zeros_past_it(rows, cols, transposed):
    matrix = torch.randn(rows, cols, generator=torch.Generator().manual_seed(rows * 71 + cols))
    source = matrix.t() if transposed else matrix
    depth, width = source.shape
    expected = torch.nn.functional.pad(source, (0, -width % 16))
    expected = expected.view(depth, -1, 16).transpose(0, 1)
    panels = native.pack_pointwise(native.load(), matrix, transposed,
                                   allocate=lambda shape: torch.full(shape, float("nan")))
    assert torch.equal(panels, expected)


def test_weight_layouts_are_cached_for_inference_and_made_afresh_in_training():
    x, dw, pw, b = _tensors(2, 6, 6, 8, 16, (3, 3), True, "NHWC", seed=16)
    cached = lambda: (("native",), False, id(dw), id(pw)) in ops._WEIGHT_CACHE  # noqa: E731
    dw.requires_grad_(True)
    pw.requires_grad_(True)
    ops.separable_conv2d(x, dw, pw, b).sum().backward()
    assert not cached()  # the weights change every step: a cached copy would only hold memory
    with torch.no_grad():
        ops.separable_conv2d(x, dw, pw, b)
    assert cached()


@pytest.mark.parametrize("variant", ["multiplier", "float64", "depthwise-only", "large-kernel"])
def test_what_the_kernel_does_not_cover_runs_the_torch_path(variant):
    x, dw, pw, b = _tensors(1, 9, 9, 4, 6, (3, 3), True, "NHWC", seed=1)
    if variant == "multiplier":
        dw = torch.randn(3, 3, 2, 2)
        x = x[..., :2].contiguous()
    elif variant == "float64":
        x, dw, pw, b = (t.double() for t in (x, dw, pw, b))
    elif variant == "depthwise-only":
        pw, b = None, torch.randn(4)
    else:
        dw = torch.randn(9, 9, 4, 1)  # 81 taps, above the kernel's 64
    with kernel_calls() as calls:
        actual = ops.separable_conv2d(x, dw, pw, b, activation="relu")
    assert calls == []
    expected = _reference(x, dw, pw, b, "relu")
    torch.testing.assert_close(actual.detach().double(), expected, rtol=1e-5, atol=1e-5)


def test_concurrent_callers_share_the_cached_weights_safely():
    x, dw, pw, b = _tensors(2, 20, 20, 24, 36, (3, 3), True, "NHWC", seed=6)
    expected = ops.separable_conv2d(x, dw, pw, b, activation="relu")
    results, errors = [], []

    def work():
        try:
            for _ in range(20):
                results.append(torch.equal(ops.separable_conv2d(x, dw, pw, b, activation="relu"),
                                           expected))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and results == [True] * 160


SCRIPT = """
import torch
from sepconv._src import native, ops
x, dw, pw = torch.randn(1, 6, 6, 3), torch.randn(3, 3, 3, 1), torch.randn(1, 1, 3, 4)
y = ops.separable_conv2d(x, dw, pw, stride=(2, 2))
expected = ops.separable_conv2d(x.double(), dw.double(), pw.double(), stride=(2, 2))
print(native.load() is None, bool(torch.allclose(y.double(), expected, atol=1e-5)))
print(native.status())
"""


@pytest.mark.parametrize("env, reason", [
    ({"SEPCONV_NATIVE": "0"}, "disabled by SEPCONV_NATIVE=0"),
    ({"CXX": "/nonexistent/c++"}, "compiling kernels.cpp failed: "),
])
def test_without_the_kernel_the_torch_path_gives_the_numbers(env, reason, tmp_path):
    environment = dict(os.environ, SEPCONV_CACHE_DIR=str(tmp_path), **env)
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=environment, capture_output=True,
                            text=True, timeout=120, check=True)
    first, status = result.stdout.splitlines()[:2]
    assert first == "True True"
    assert status.startswith(reason)
    assert list(tmp_path.iterdir()) == []  # a failed compile leaves no partial library


def test_compiled_library_is_cached_by_content(tmp_path):
    environment = dict(os.environ, SEPCONV_CACHE_DIR=str(tmp_path))
    for _ in range(2):
        result = subprocess.run([sys.executable, "-c", SCRIPT], env=environment,
                                capture_output=True, text=True, timeout=120, check=True)
        assert result.stdout.splitlines()[0] == "False True"
    libraries = list(tmp_path.iterdir())
    assert [p.name for p in libraries] == [native._library_path().name]


def _training_step(x, dw, pw, b, activation, cotangent_seed=1, **kwargs):
    """Output and gradients of sepconv and of the float64 reference, and the kernel's calls."""
    x, dw, pw, b = (None if t is None else t.requires_grad_(True) for t in (x, dw, pw, b))
    wrt = [t for t in (x, dw, pw, b) if t is not None]
    with kernel_calls() as forwards, kernel_calls("separable_backward") as backwards:
        actual = ops.separable_conv2d(x, dw, pw, b, activation=activation, **kwargs)
        cotangent = torch.randn(actual.shape, generator=torch.Generator().manual_seed(cotangent_seed))
        grads = torch.autograd.grad(actual, wrt, cotangent)
    expected = _reference(x, dw, pw, b, activation, **kwargs)
    wants = torch.autograd.grad(expected, wrt, cotangent.double())
    _assert_float32_close(actual.detach(), expected.detach())
    for got, want in zip(grads, wants):
        _assert_float32_close(got, want.double())  # float64 reference, rounded to float32 at the end
    return len(forwards), len(backwards)


@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (2, 1)])
def test_training_step_runs_the_kernel_and_gradients_match_reference(stride):
    tensors = _tensors(max(2, torch.get_num_threads()), 9, 8, 12, 20, (3, 3), True, "NHWC", seed=8)
    assert _training_step(*tensors, "relu6", stride=stride) == (1, 1)


@given(kernel_cases())
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_kernel_backward_matches_reference(case):
    """Every geometry, both layouts, strided inputs, each activation, with and without bias."""
    batch = max(case["batch"], torch.get_num_threads())
    x, dw, pw, b = _tensors(batch, case["height"], case["width"], case["channels"],
                            case["outputs"], case["kernel"], case["bias"], case["data_format"],
                            case["seed"], case["noncontiguous"])
    kwargs = dict(case["call"], data_format=case["data_format"])
    assert _training_step(x, dw, pw, b, case["activation"], **kwargs) == (1, 1)


@pytest.mark.parametrize("channels, outputs, kernel", [
    (5, 1100, (3, 3)),   # the input gradient's GEMM over more than one 1024-deep pass
    (37, 3, (5, 2)),     # a narrow panel, a tail of channels, an unsquare kernel
    (1, 1, (1, 1)),
    (300, 40, (3, 3)),   # wide channels: several passes of the packed weight-gradient sum per thread
    (1024, 1024, (3, 3)),  # the most pointwise weights the kernel backward takes
])
def test_kernel_backward_edge_shapes_match_reference(channels, outputs, kernel):
    tensors = _tensors(max(2, torch.get_num_threads()), 11, 7, channels, outputs, kernel, True,
                       "NHWC", seed=12)
    assert _training_step(*tensors, "relu", stride=(1, 2)) == (1, 1)


def test_an_input_gradient_beyond_the_cache_is_streamed_and_correct():
    """2 x 128 x 160 x 128 floats: a 20 MiB input gradient, from 20 MiB on written a band of rows at
    a time through a buffer in L1 by non-temporal stores."""
    tensors = _tensors(max(2, torch.get_num_threads()), 128, 160, 128, 24, (3, 3), True, "NHWC",
                       seed=15)
    assert _training_step(*tensors, "relu") == (1, 1)
    buffers.release()


@pytest.mark.parametrize("size, stride", [(13, (1, 1)), (25, (2, 2))])
def test_kernel_backward_tiles_ending_inside_a_row_match_reference(size, stride):
    """700 outputs: tiles of at most 93 pixels, so a 13x13 output is two tiles of 85, the second
    starting in the middle of a row; each part of that row adds its own columns to the depthwise
    weights' gradient. Two images or more per thread: the second reuses the first's buffers."""
    tensors = _tensors(2 * max(2, torch.get_num_threads()), size, size, 64, 700, (3, 3), True,
                       "NHWC", seed=14)
    assert _training_step(*tensors, "relu", stride=stride) == (1, 1)


@pytest.mark.parametrize("kernel", [(2, 2), (3, 3)])
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_kernel_backward_with_a_non_finite_weight_matches_reference(kernel, padding, bad):
    """The input gradient's gather: a tap past the output's edge adds nothing, not 0 * w."""
    x, dw, pw, b = _tensors(max(2, torch.get_num_threads()), 6, 7, 8, 4, kernel, True, "NHWC", seed=4)
    dw[0, 0, 3, 0] = bad  # one channel's top-left tap: NaN only where a real output reads through it
    assert _training_step(x, dw, pw, b, None, padding=padding) == (1, 1)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_kernel_backward_with_each_thread_count_matches_reference(threads):
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        tensors = _tensors(5, 10, 10, 16, 24, (3, 3), True, "NHWC", seed=13)
        assert _training_step(*tensors, "relu") == (1, 1)
    finally:
        torch.set_num_threads(saved)


def test_a_kernel_training_step_saves_the_input_weights_and_output_only():
    """One autograd node for the step, holding no depthwise intermediate."""
    x, dw, pw, b = (t.requires_grad_(True) for t in
                    _tensors(max(2, torch.get_num_threads()), 6, 6, 8, 5, (3, 3), True, "NHWC", 16))
    out = ops.separable_conv2d(x, dw, pw, b, activation="relu", stride=(2, 2))
    node = out.grad_fn
    while node is not None and type(node).__name__ != "_KernelSeparableFunctionBackward":
        node = node.next_functions[0][0]
    assert node is not None, "the step did not go through _KernelSeparableFunction"
    rows = x.shape[0] * 3 * 3
    saved = [tuple(t.shape) for t in node.saved_tensors if t is not None]
    assert sorted(saved) == sorted([tuple(x.permute(0, 3, 1, 2).shape), tuple(dw.shape),
                                    tuple(pw.shape), tuple(b.shape), (rows, 5)])
    # The weights' gradients reach them through no other node: in TF's layouts.
    assert {type(f).__name__ for f, _ in node.next_functions if f is not None} <= {
        "AccumulateGrad", "PermuteBackward0"}


def test_second_order_gradients_of_the_weights_alone_through_the_kernel_step():
    """create_graph=True on a kernel step whose input needs no gradient: recomputed, differentiable."""
    x, dw, pw, b = _tensors(max(2, torch.get_num_threads()), 7, 6, 8, 4, (3, 3), True, "NHWC", 17)
    weights = [t.requires_grad_(True) for t in (dw, pw, b)]
    with kernel_calls() as forwards, kernel_calls("separable_backward") as backwards:
        out = ops.separable_conv2d(x, *weights, activation="relu6", stride=(2, 1))
        grads = torch.autograd.grad(out.square().sum(), weights, create_graph=True)
        got = torch.autograd.grad(sum(g.square().sum() for g in grads), weights)
    # The forward ran in the kernel; the second order's path through the output's own
    # gradient takes the kernel's first-order backward, the rest PyTorch's recomputation.
    assert (len(forwards), len(backwards)) == (1, 1)
    exact = [t.detach().double().requires_grad_(True) for t in weights]
    expected_out = _reference(x, *exact, "relu6", stride=(2, 1))
    exact_grads = torch.autograd.grad(expected_out.square().sum(), exact, create_graph=True)
    want = torch.autograd.grad(sum(g.square().sum() for g in exact_grads), exact)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double(), w, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("variant", ["wide", "few-images"])
def test_what_the_kernel_backward_does_not_cover_runs_the_torch_backward(variant):
    saved = torch.get_num_threads()
    try:
        if variant == "wide":  # more pointwise weights than the kernel's per-thread sums hold
            channels, outputs = 257, ops.NATIVE_BACKWARD_MAX_WEIGHTS // 256
            torch.set_num_threads(1)
        else:  # fewer images than threads: whole images per thread would leave one idle
            channels, outputs = 8, 8
            torch.set_num_threads(2)
        tensors = _tensors(1, 6, 6, channels, outputs, (3, 3), True, "NHWC", seed=14)
        assert _training_step(*tensors, "relu") == (1, 0)
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("activation, blocked", [("relu", -1.0), ("relu6", 7.0)])
def test_kernel_backward_gives_exact_zeros_where_the_activation_blocks(activation, blocked):
    """Where the output is clamped, the gradient is 0 even for an infinite cotangent, as in torch."""
    x, dw, pw, b = _tensors(2, 6, 6, 8, 16, (3, 3), False, "NHWC", seed=15)
    x, dw, pw = x.abs(), dw.abs(), pw.abs()
    pw[..., :8] = blocked  # the first 8 outputs are clamped everywhere
    wrt = [t.requires_grad_(True) for t in (x, dw, pw)]
    with kernel_calls("separable_backward") as backwards:
        out = ops.separable_conv2d(x, dw, pw, activation=activation)
        cotangent = torch.ones(out.shape)
        cotangent[..., :8] = float("inf")
        grads = torch.autograd.grad(out, wrt, cotangent)
        cotangent[..., :8] = 0.0
        finite = torch.autograd.grad(ops.separable_conv2d(x, dw, pw, activation=activation), wrt,
                                     cotangent)
    assert len(backwards) == 2
    for got, want in zip(grads, finite):
        assert got.isfinite().all()
        assert torch.equal(got, want)


def test_an_unusable_cache_directory_falls_back_to_the_temporary_one(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the cache directory should be: mkdir fails, even as root
    environment = dict(os.environ, SEPCONV_CACHE_DIR=str(blocked / "cache"), TMPDIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=environment, capture_output=True,
                            text=True, timeout=120, check=True)
    first, status = result.stdout.splitlines()[:2]
    assert first == "False True", status
    assert status.startswith(f"compiled kernel {tmp_path}")


OUT_OF_MEMORY = """
import resource, torch
from sepconv._src import ops
# 64 threads: the few-rows schedule, whose work buffer holds the depthwise
# output of all 15,000 rows (61 MB), against a 60 KB output.
torch.set_num_threads(64)
dw, pw = torch.randn(3, 3, 1024, 1), torch.randn(1, 1, 1024, 1)
ops.separable_conv2d(torch.randn(1, 4, 4, 1024), dw, pw)  # threads started, weights cached
x = torch.randn(1, 100, 150, 1024)
vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize:")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (8 << 20), resource.RLIM_INFINITY))
try:
    ops.separable_conv2d(x, dw, pw)
    print("no error")
except MemoryError as error:
    print(error)
resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
print(tuple(ops.separable_conv2d(x[:, :4], dw, pw).shape))
"""


def test_a_failed_allocation_in_the_kernel_raises_memory_error_and_the_process_goes_on():
    result = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        "sepconv's kernel could not allocate its work buffer for an NHWC input of shape "
        "(1, 100, 150, 1024) and 1 output channels",
        "(1, 4, 150, 1)"]
