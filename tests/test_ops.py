"""The math of ``sepconv._src.ops`` (and the layer) against the float64 reference.

``reference.py`` computes the layer with explicit slicing and einsum over a
zero-padded NHWC input; nothing here shares code with ``ops``. Every
specialised fast path of ``ops`` has its own test against that reference.
"""
import contextlib
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference
import sepconv as sc
from strategies import geometries
from sepconv._src import ops

F64 = dict(atol=1e-10, rtol=1e-10)
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("size, kernel, stride, rate, expected", [
    (224, 3, 2, 1, (0, 1)),   # TF's stride-2 even input: the extra pixel goes after
    (225, 3, 2, 1, (1, 1)),
    (112, 3, 2, 1, (0, 1)),
    (7, 3, 1, 1, (1, 1)),
    (7, 3, 1, 2, (2, 2)),
    (5, 2, 1, 1, (0, 1)),     # even kernel, stride 1
    (5, 2, 1, 3, (1, 2)),     # dilated even kernel: odd total
    (6, 4, 1, 1, (1, 2)),
    (1, 3, 2, 1, (1, 1)),
    (4, 1, 2, 1, (0, 0)),
    (2, 5, 3, 1, (1, 2)),
    (19, 3, 1, 1, (1, 1)),
])
def test_same_padding_table(size, kernel, stride, rate, expected):
    assert ops.same_padding(size, kernel, stride, rate) == expected
    assert reference.tf_same_pads(size, kernel, stride, rate) == expected


@given(st.integers(1, 40), st.integers(1, 6), st.integers(1, 4), st.integers(1, 4))
@SETTINGS
def test_same_padding_gives_ceil_output(size, kernel, stride, rate):
    before, after = ops.same_padding(size, kernel, stride, rate)
    effective = (kernel - 1) * rate + 1
    assert 0 <= after - before <= 1
    assert (size + before + after - effective) // stride + 1 == -(-size // stride)


def test_conv_geometry_rejects_rate_with_stride():
    with pytest.raises(ValueError, match="rate"):
        ops.conv_geometry((8, 8), (3, 3), (2, 1), (1, 2), "SAME")


def test_conv_geometry_takes_padding_in_any_case_and_refuses_other_strings():
    # It once read every string but 'SAME' as VALID: ops.conv2d(padding='same') shrank the image.
    assert ops.conv_geometry((4, 4), (3, 3), (1, 1), (1, 1), "same") == (((1, 1), (1, 1)), (4, 4))
    with pytest.raises(ValueError, match=r"Invalid padding string 'full'"):
        ops.conv_geometry((4, 4), (3, 3), (1, 1), (1, 1), "full")


# ----------------------------------------------------------------------------
# Forward against the reference, over generated arguments
# ----------------------------------------------------------------------------
@st.composite
def layer_cases(draw):
    """Arguments of one layer call; rate and stride never both above 1 (TF's rule)."""
    kernel, stride, rate, padding, (height, width) = draw(geometries(max_kernel=4, max_extra=7))
    return dict(
        batch=draw(st.integers(1, 2)), height=height, width=width,
        channels=draw(st.integers(1, 4)), multiplier=draw(st.integers(1, 3)),
        num_outputs=draw(st.one_of(st.none(), st.integers(1, 5))),
        bias=draw(st.booleans()), kernel=kernel, stride=stride, rate=rate, padding=padding,
        data_format=draw(st.sampled_from(["NHWC", "NCHW"])),
        activation=draw(st.sampled_from([None, "relu", "relu6"])),
        noncontiguous=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 16)))


def make_tensors(case, dtype=torch.float64, requires_grad=False):
    gen = torch.Generator().manual_seed(case["seed"])
    n, h, w, c = case["batch"], case["height"], case["width"], case["channels"]
    shape = (n, h, w, c) if case["data_format"] == "NHWC" else (n, c, h, w)
    if case.get("noncontiguous"):
        # Same values, other strides: a transposed copy viewed back.
        x = torch.randn(shape[::-1], generator=gen, dtype=dtype).permute(3, 2, 1, 0)
    else:
        x = torch.randn(shape, generator=gen, dtype=dtype)
    channels_mid = c * case["multiplier"]
    dw = torch.randn(*case["kernel"], c, case["multiplier"], generator=gen, dtype=dtype)
    pw = None
    if case["num_outputs"] is not None:
        pw = torch.randn(1, 1, channels_mid, case["num_outputs"], generator=gen, dtype=dtype)
    channels_out = case["num_outputs"] or channels_mid
    b = torch.randn(channels_out, generator=gen, dtype=dtype) if case["bias"] else None
    tensors = [x, dw, pw, b]
    if requires_grad:
        tensors = [None if t is None else t.detach().requires_grad_(True) for t in tensors]
    return tensors


def call_ops(case, x, dw, pw, b):
    return ops.separable_conv2d(x, dw, pw, b, stride=case["stride"], rate=case["rate"],
                                padding=case["padding"], data_format=case["data_format"],
                                activation=case.get("activation"))


def call_reference(case, x, dw, pw, b):
    y = reference.separable_conv2d(x, dw, pw, b, stride=case["stride"], rate=case["rate"],
                                   padding=case["padding"], data_format=case["data_format"])
    activation = case.get("activation")
    if activation == "relu":
        y = torch.relu(y)
    elif activation == "relu6":
        y = F.relu6(y)
    return y


@given(layer_cases())
@SETTINGS
def test_ops_matches_reference(case):
    tensors = make_tensors(case)
    expected = call_reference(case, *tensors)
    actual = call_ops(case, *tensors)
    assert actual.shape == expected.shape
    assert actual.shape == ops.output_shape(tuple(tensors[0].shape), case["kernel"], case["stride"],
                                            case["rate"], case["padding"], case["data_format"],
                                            expected.shape[3 if case["data_format"] == "NHWC" else 1])
    torch.testing.assert_close(actual, expected, **F64)


@given(layer_cases())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_layer_matches_reference(case):
    """The TF1 layer end to end, with its variables fed the case's weights."""
    x, dw, pw, b = make_tensors(case)
    values = {"depthwise_weights": dw, "pointwise_weights": pw, "biases": b}

    def initial_values(getter, name, *args, **kwargs):  # TF passes the true getter as `getter`
        kwargs["initializer"] = sc.constant_initializer(values[name.split("/")[-1]].numpy())
        return getter(name, *args, **kwargs)

    activation = {None: None, "relu": torch.relu, "relu6": F.relu6}[case["activation"]]
    with sc.Graph().as_default(), sc.variable_scope("net", custom_getter=initial_values):
        y = sc.separable_conv2d(x, case["num_outputs"], list(case["kernel"]), case["multiplier"],
                                stride=list(case["stride"]), rate=list(case["rate"]),
                                padding=case["padding"], data_format=case["data_format"],
                                activation_fn=activation,
                                biases_initializer=sc.zeros_initializer() if case["bias"] else None)
    torch.testing.assert_close(y, call_reference(case, x, dw, pw, b), **F64)


# ----------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("num_outputs", [None, 3])
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("stride, rate", [((2, 2), (1, 1)), ((1, 2), (1, 1)), ((1, 1), (2, 1))])
def test_gradcheck_all_inputs(num_outputs, data_format, stride, rate):
    case = dict(batch=2, height=5, width=6, channels=2, multiplier=2, num_outputs=num_outputs,
                bias=True, kernel=(3, 2), stride=stride, rate=rate, padding="SAME",
                data_format=data_format, seed=3)
    tensors = [t for t in make_tensors(case, requires_grad=True) if t is not None]
    if num_outputs is None:
        x, dw, b = tensors
        assert torch.autograd.gradcheck(lambda x, dw, b: call_ops(case, x, dw, None, b), (x, dw, b))
    else:
        assert torch.autograd.gradcheck(lambda *t: call_ops(case, *t), tuple(tensors))


@given(layer_cases())
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_gradients_match_reference(case):
    """Gradients through the in-place epilogue equal the reference's."""
    tensors = make_tensors(case, requires_grad=True)
    grads = _grads(call_ops(case, *tensors), tensors)
    expected_grads = _grads(call_reference(case, *tensors), tensors)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, **F64)


def _grads(output, tensors, seed=1):
    """Gradients of ``sum(output * c)`` for a fixed random ``c``, w.r.t. the non-None tensors."""
    cotangent = torch.randn(output.shape, generator=torch.Generator().manual_seed(seed),
                            dtype=output.dtype)
    return torch.autograd.grad((output * cotangent).sum(), [t for t in tensors if t is not None])


# ----------------------------------------------------------------------------
# Each specialised path against the reference
# ----------------------------------------------------------------------------
@contextlib.contextmanager
def chunk_bytes(value):
    """Forces the chunked path (several image groups) on small test shapes."""
    saved = ops.CHUNK_BYTES, ops.CHUNK_THRESHOLD_BYTES
    ops.CHUNK_BYTES, ops.CHUNK_THRESHOLD_BYTES = value, 0
    try:
        yield
    finally:
        ops.CHUNK_BYTES, ops.CHUNK_THRESHOLD_BYTES = saved


@given(layer_cases(), st.sampled_from([1, 200]))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_chunked_forward_and_backward_match_reference(case, chunk):
    """One image (or a few) per chunk: the inference loop and the recomputing backward."""
    case = dict(case, batch=case["batch"] + 2)
    tensors = make_tensors(case, requires_grad=True)
    expected = call_reference(case, *tensors)
    expected_grads = _grads(expected, tensors)
    with chunk_bytes(chunk):
        with torch.no_grad():
            torch.testing.assert_close(call_ops(case, *tensors), expected, **F64)
        actual = call_ops(case, *tensors)
        grads = _grads(actual, tensors)
    torch.testing.assert_close(actual, expected, **F64)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, **F64)


def test_training_path_saves_input_and_output_only():
    """The recomputing backward keeps no depthwise intermediate alive."""
    case = _case(batch=3, num_outputs=5)
    x, dw, pw, b = make_tensors(case, requires_grad=True)
    y = call_ops(case, x, dw, pw, b)
    node = y.grad_fn
    while node is not None and "SeparableFunction" not in type(node).__name__:
        node = node.next_functions[0][0]
    assert node is not None, "the training path did not go through _SeparableFunction"
    saved = [tuple(t.shape) for t in node.saved_tensors]
    n, h, w = case["batch"], case["height"] // 2, case["width"] // 2
    assert (n * h * w, case["channels"] * case["multiplier"]) not in saved
    assert (n * h * w, 5) in saved  # the output, needed by the ReLU's gradient


@pytest.mark.parametrize("chunk", [None, 1])
def test_gradgradcheck_through_the_recomputing_backward(chunk):
    case = _case(batch=3, height=5, width=4, channels=2, num_outputs=3)
    tensors = make_tensors(case, requires_grad=True)
    with chunk_bytes(chunk) if chunk else contextlib.nullcontext():
        assert torch.autograd.gradgradcheck(lambda *t: call_ops(case, *t), tuple(tensors))


def test_second_order_gradients_in_float32_match_float64():
    """A gradient penalty through the compiled kernel's training path (create_graph=True)."""
    case = _case(batch=2, height=7, width=7, channels=3, num_outputs=4)
    exact = make_tensors(case, requires_grad=True)
    single = [t.detach().float().requires_grad_(True) for t in exact]
    penalties = []
    for tensors in (single, exact):
        grads = torch.autograd.grad(call_ops(case, *tensors).square().sum(), tensors, create_graph=True)
        penalty = sum(g.square().sum() for g in grads)
        penalties.append(torch.autograd.grad(penalty, tensors))
    for got, want in zip(*penalties):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-3)


def test_empty_batch_gives_empty_input_gradient():
    case = _case(batch=0)
    tensors = make_tensors(case, requires_grad=True)
    grads = torch.autograd.grad(call_ops(case, *tensors).sum(), tensors)
    assert grads[0].shape == tensors[0].shape
    assert all(not g.any() for g in grads)


def test_chunked_gradcheck():
    case = _case(batch=3, height=5, width=4, channels=2, multiplier=2, num_outputs=3)
    tensors = make_tensors(case, requires_grad=True)
    with chunk_bytes(1):
        assert torch.autograd.gradcheck(lambda *t: call_ops(dict(case, activation=None), *t),
                                        tuple(tensors))


def _case(**overrides):
    case = dict(batch=2, height=8, width=6, channels=3, multiplier=1, num_outputs=4, bias=True,
                kernel=(3, 3), stride=(2, 2), rate=(1, 1), padding="SAME", data_format="NHWC",
                activation="relu", seed=7)
    case.update(overrides)
    return case


def _check_against_reference(case, dtype=torch.float64, **tolerance):
    tensors = make_tensors(case, dtype=dtype)
    torch.testing.assert_close(call_ops(case, *tensors), call_reference(case, *tensors),
                               **(tolerance or F64))


def test_asymmetric_padding_uses_a_zero_tap_not_a_copy():
    # 8x6 input, stride 2, kernel 3: TF pads (0, 1) on both axes.
    assert ops._depthwise_plan(((0, 1), (0, 1)), (1, 1)) == ((1, 1), (1, 1), False)
    _check_against_reference(_case())


@pytest.mark.parametrize("stride", [(1, 2), (2, 1), (3, 2)])
def test_unequal_strides_with_asymmetric_padding(stride):
    _check_against_reference(_case(stride=stride, height=9, width=8))


def test_dilated_odd_padding_falls_back_to_explicit_pad():
    # kernel 2 at rate 3: total padding 3, odd; a zero tap would shift by 3.
    assert ops._depthwise_plan(((1, 2), (0, 0)), (3, 1))[2] is True
    _check_against_reference(_case(kernel=(2, 1), stride=(1, 1), rate=(3, 1), height=7))


@pytest.mark.parametrize("rate", [(2, 2), (1, 3), (2, 1)])
def test_dilation(rate):
    _check_against_reference(_case(stride=(1, 1), rate=rate, height=9, width=9))


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_nchw_input(padding):
    _check_against_reference(_case(data_format="NCHW", padding=padding))
    _check_against_reference(_case(data_format="NCHW", padding=padding, noncontiguous=True))


def test_float32_fast_path_within_float32_tolerance():
    _check_against_reference(_case(height=16, width=16, channels=8, num_outputs=16),
                             dtype=torch.float32, atol=1e-5, rtol=1e-5)


def test_in_place_epilogue_keeps_inputs_untouched():
    case = _case(num_outputs=None)
    tensors = make_tensors(case)
    before = [t.clone() for t in tensors if t is not None]
    call_ops(case, *tensors)
    for got, want in zip([t for t in tensors if t is not None], before):
        assert torch.equal(got, want)


def test_unknown_activation_is_rejected():
    with pytest.raises(ValueError, match="'tanh'.*relu"):
        call_ops(_case(activation="tanh"), *make_tensors(_case()))


@pytest.mark.parametrize("shapes, message", [
    (((3, 3, 16, 1), (1, 1, 16, 4), (4,)), r"depthwise_weights has 16 input channels \(shape "
                                           r"\[3, 3, 16, 1\]\), but inputs have 8"),
    (((3, 3, 8), (1, 1, 8, 4), (4,)), r"depthwise_weights must be 4-D \[kh, kw, in_channels, "
                                      r"multiplier\], got shape \[3, 3, 8\]"),
    (((3, 3, 8, 2), (1, 1, 8, 4), (4,)), r"pointwise_weights must have shape \[1, 1, 16, out\] "
                                         r"for these depthwise_weights, got \[1, 1, 8, 4\]"),
    (((3, 3, 8, 1), (2, 1, 8, 4), (4,)), r"pointwise_weights must have shape \[1, 1, 8, out\]"),
    (((3, 3, 8, 1), (8, 4), (4,)), r"pointwise_weights must be 4-D \[1, 1, in_channels \* "
                                   r"multiplier, out\], got shape \[8, 4\]"),
    (((3, 3, 8, 1), (1, 1, 8, 4), (3,)), r"biases must have shape \[4\] \(the output "
                                         r"channels\), got \[3\]"),
    (((3, 3, 8, 2), None, (8,)), r"biases must have shape \[16\]"),
    (((0, 3, 8, 1), (1, 1, 8, 4), (4,)), r"depthwise_weights must not have zero elements \(TF's "
                                         r"filter rule\), got shape \[0, 3, 8, 1\]"),
    (((3, 3, 8, 0), (1, 1, 0, 4), (4,)), r"depthwise_weights must not have zero elements"),
    (((3, 3, 8, 1), (1, 1, 8, 4), (4,), "3-D"),
     r"inputs must be 4-D (NHWC|NCHW), got shape \[(5, 5, 8|8, 5, 5)\]"),
])
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_operands_of_mismatched_shapes_are_rejected(shapes, message, data_format):
    """The kernel would read past a short operand: every shape is checked against the input's."""
    x = torch.randn(1, 5, 5, 8)
    if data_format == "NCHW":
        x = x.permute(0, 3, 1, 2)
    if shapes[3:]:
        x = x[0]
    dw, pw, b = (None if shape is None else torch.randn(shape) for shape in shapes[:3])
    with pytest.raises(ValueError, match=message):
        ops.separable_conv2d(x, dw, pw, b, data_format=data_format)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(padding="bogus"), ValueError, r"Invalid padding string 'bogus', should be one of \['SAME', 'VALID'\]"),
    (dict(data_format="nhwc"), ValueError, "data_format has to be either NCHW or NHWC, got 'nhwc'"),
    (dict(stride=(0, 0)), ValueError, r"Invalid stride 0: expected an int >= 1"),
    (dict(stride=1.5), TypeError, r"Invalid stride 1.5: expected an int >= 1"),
    (dict(rate=(1, 2, 3)), ValueError, r"Invalid rate \(1, 2, 3\): expected an int or a list of length 2"),
])
def test_invalid_arguments_are_rejected_naming_them(kwargs, error, match):
    x, dw, pw = torch.randn(1, 5, 5, 2), torch.randn(3, 3, 2, 1), torch.randn(1, 1, 2, 4)
    with pytest.raises(error, match=match):
        ops.separable_conv2d(x, dw, pw, **kwargs)


def test_ints_and_any_case_padding_are_accepted():
    x, dw, pw = torch.randn(1, 5, 5, 2), torch.randn(3, 3, 2, 1), torch.randn(1, 1, 2, 4)
    torch.testing.assert_close(ops.separable_conv2d(x, dw, pw, stride=2, padding="same"),
                               ops.separable_conv2d(x, dw, pw, stride=(2, 2), padding="SAME"))


@pytest.mark.parametrize("dtype,requires_grad", [(torch.float32, False), (torch.float32, True),
                                                 (torch.float64, False)])
@pytest.mark.parametrize("shape", [(2, 0, 5, 2), (2, 5, 0, 2)])
def test_an_empty_image_is_rejected_on_every_path(dtype, requires_grad, shape):
    x = torch.randn(shape, dtype=dtype, requires_grad=requires_grad)
    dw, pw = torch.randn(3, 3, 2, 1, dtype=dtype), torch.randn(1, 1, 2, 4, dtype=dtype)
    with pytest.raises(ValueError, match=rf"Invalid inputs shape \{list(shape)}\: height and width"):
        ops.separable_conv2d(x, dw, pw)


@pytest.mark.parametrize("argument", ["depthwise_weights", "pointwise_weights", "biases"])
def test_operands_of_another_dtype_are_rejected_naming_them(argument):
    operands = {"inputs": torch.randn(1, 5, 5, 2), "depthwise_weights": torch.randn(3, 3, 2, 1),
                "pointwise_weights": torch.randn(1, 1, 2, 4), "biases": torch.randn(4)}
    operands[argument] = operands[argument].double()
    with pytest.raises(TypeError, match=f"{argument} has dtype torch.float64, but inputs have "
                                        r"torch.float32: convert one"):
        ops.separable_conv2d(*operands.values())


@pytest.mark.parametrize("multiplier", [1, 2])  # the kernel's case, and PyTorch's
def test_autocast_forward_and_backward_in_its_dtype(multiplier):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 6, 4, generator=gen, requires_grad=True)
    dw = torch.randn(3, 3, 4, multiplier, generator=gen, requires_grad=True)
    pw = torch.randn(1, 1, 4 * multiplier, 8, generator=gen, requires_grad=True)
    b = torch.randn(8, generator=gen, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ops.separable_conv2d(x, dw, pw, b, stride=(2, 2))
    assert y.dtype == torch.bfloat16
    grads = torch.autograd.grad(y.float().sum(), (x, dw, pw, b))  # the backward runs outside autocast
    exact = [t.detach().double().requires_grad_(True) for t in (x, dw, pw, b)]
    expected_y = reference.separable_conv2d(*exact, stride=(2, 2))
    expected = torch.autograd.grad(expected_y.sum(), exact)
    torch.testing.assert_close(y.double(), expected_y, rtol=0.05, atol=0.1)
    for got, want, leaf in zip(grads, expected, (x, dw, pw, b)):
        assert got.dtype == leaf.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=0.05, atol=0.5)


@pytest.mark.parametrize("stride", [(1.0, 1.0), (True, True)])
def test_repeated_call_still_refuses_strides_that_are_not_ints(stride):
    x, dw, pw = torch.randn(1, 5, 5, 2), torch.randn(3, 3, 2, 1), torch.randn(1, 1, 2, 4)
    with torch.no_grad():
        ops.separable_conv2d(x, dw, pw, stride=(1, 1))  # recorded for repeats
        with pytest.raises(TypeError, match=f"Invalid stride {stride[0]}: expected an int"):
            ops.separable_conv2d(x, dw, pw, stride=stride)


def test_autocast_casts_operands_of_another_dtype():
    x, dw, pw, b = torch.randn(1, 5, 5, 2), torch.randn(3, 3, 2, 1), torch.randn(1, 1, 2, 4), torch.randn(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ops.separable_conv2d(x.bfloat16(), dw, pw, b)
    assert y.dtype == torch.bfloat16
    expected = reference.separable_conv2d(x.bfloat16().double(), dw.double(), pw.double(), b.double())
    torch.testing.assert_close(y.double(), expected, rtol=0.05, atol=0.05)


# ----------------------------------------------------------------------------
# Batch-norm folding and the weight cache
# ----------------------------------------------------------------------------
def _bn_params(channels, seed):
    gen = torch.Generator().manual_seed(seed)
    mean = torch.randn(channels, generator=gen, dtype=torch.float64)
    variance = torch.rand(channels, generator=gen, dtype=torch.float64) + 0.5
    beta = torch.randn(channels, generator=gen, dtype=torch.float64)
    gamma = torch.randn(channels, generator=gen, dtype=torch.float64)
    return mean, variance, beta, gamma


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("with_gamma", [False, True])
def test_inference_batch_norm_folding(with_bias, with_gamma):
    case = _case(bias=with_bias, activation=None)
    x, dw, pw, b = make_tensors(case)
    mean, variance, beta, gamma = _bn_params(case["num_outputs"], 1)
    gamma = gamma if with_gamma else None
    folded_pw, folded_b = ops.fold_batch_norm(pw, b, mean, variance, beta, gamma, 1e-3)
    actual = call_ops(case, x, dw, folded_pw, folded_b)
    expected = reference.batch_norm_inference(call_reference(case, x, dw, pw, b), mean, variance,
                                              beta, gamma, 1e-3)
    torch.testing.assert_close(actual, expected, **F64)
    # The layer's own inference batch norm gives the same numbers.
    unfolded = ops.batch_norm(call_ops(case, x, dw, pw, b), beta, gamma, mean, variance,
                              decay=0.9, epsilon=1e-3, is_training=False, channel_axis=3)
    torch.testing.assert_close(unfolded, expected, **F64)


def test_fold_is_recomputed_when_a_statistic_changes_in_place():
    case = _case(activation=None)
    x, dw, pw, b = make_tensors(case)
    mean, variance, beta, gamma = _bn_params(case["num_outputs"], 2)
    first = ops.fold_batch_norm(pw, b, mean, variance, beta, gamma, 1e-3)
    assert ops.fold_batch_norm(pw, b, mean, variance, beta, gamma, 1e-3)[0] is first[0]
    with torch.no_grad():
        mean.add_(1.0)  # bumps mean._version, as batch_norm's moving update does
    second = ops.fold_batch_norm(pw, b, mean, variance, beta, gamma, 1e-3)
    expected = reference.batch_norm_inference(call_reference(case, x, dw, pw, b), mean, variance,
                                              beta, gamma, 1e-3)
    torch.testing.assert_close(call_ops(case, x, dw, *second), expected, **F64)


def test_depthwise_cache_follows_weight_updates_and_keeps_gradients():
    case = _case()
    x, dw, pw, b = make_tensors(case)
    dw.requires_grad_(True)
    with torch.no_grad():
        first = call_ops(case, x, dw, pw, b)
        dw.mul_(2.0)
        second = call_ops(case, x, dw, pw, b)
    torch.testing.assert_close(second, call_reference(case, x, dw.detach(), pw, b), **F64)
    assert not torch.allclose(first, second)
    # With gradients on, the converted kernel stays connected to the TF-layout weight.
    y = call_ops(case, x, dw, pw, b)
    (grad,) = torch.autograd.grad(y.sum(), dw)
    (expected,) = torch.autograd.grad(call_reference(case, x, dw, pw, b).sum(), dw)
    torch.testing.assert_close(grad, expected, **F64)


def _wide_layer(dtype):
    """A layer whose pointwise weights span many of the fingerprint's sampling steps."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4, 4, 256, generator=gen, dtype=dtype)
    dw = torch.randn(3, 3, 256, 1, generator=gen, dtype=dtype)
    pw = torch.randn(1, 1, 256, 256, generator=gen, dtype=dtype) / 16
    return x, dw, torch.nn.Parameter(pw), torch.randn(256, generator=gen, dtype=dtype)


def _check_wide_layer(x, dw, pw, b):
    with torch.no_grad():
        y = ops.separable_conv2d(x, dw, pw, b)
    expected = reference.separable_conv2d(x.double(), dw.double(), pw.detach().double(), b.double())
    torch.testing.assert_close(y.double(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weight_cache_follows_a_fused_optimizer_step(dtype):
    x, dw, pw, b = _wide_layer(dtype)
    _check_wide_layer(x, dw, pw, b)
    # One element, between the words the memory fingerprint samples: only the
    # optimizer-step count can tell.
    pw.grad = torch.zeros_like(pw)
    pw.grad[0, 0, 3, 5] = -100.0
    version = pw._version
    torch.optim.SGD([pw], lr=1.0, fused=True).step()
    assert pw._version == version  # fused optimizers leave the version counter alone
    _check_wide_layer(x, dw, pw, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weight_cache_follows_writes_through_data(dtype):
    x, dw, pw, b = _wide_layer(dtype)
    _check_wide_layer(x, dw, pw, b)
    version = pw._version
    pw.data.mul_(-2.0)  # old-style SGD loops write so; autograd's counter does not see it
    assert pw._version == version
    _check_wide_layer(x, dw, pw, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inference_mode_weights_and_cache_entries(dtype):
    x, dw, pw, b = _wide_layer(dtype)
    mean, variance = torch.randn(256, dtype=dtype), torch.rand(256, dtype=dtype) + 0.5
    with torch.inference_mode():
        ops.separable_conv2d(x, dw, pw, b)  # its cache entries hold inference tensors
        folded = ops.fold_batch_norm(pw, b, mean, variance, None, None, 1e-3)
        y = ops.separable_conv2d(x, dw, *folded)  # weights that have no version counter
    expected = reference.batch_norm_inference(
        reference.separable_conv2d(x.double(), dw.double(), pw.detach().double(), b.double()),
        mean.double(), variance.double(), None, None, 1e-3)
    torch.testing.assert_close(y.double(), expected, rtol=1e-4, atol=1e-4)
    # Outside inference mode, an input gradient through the same weights.
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(ops.separable_conv2d(xg, dw, pw, b).sum(), xg)
    xr = x.double().requires_grad_(True)
    (expected,) = torch.autograd.grad(
        reference.separable_conv2d(xr, dw.double(), pw.detach().double(), b.double()).sum(), xr)
    torch.testing.assert_close(grad.double(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inference_tensor_weights_follow_a_one_element_write(dtype):
    # Inference tensors have no version counter, and one element may fall
    # between the fingerprint's sampled words: such weights are not cached.
    with torch.inference_mode():
        x, dw, pw, b = (t.clone() for t in _wide_layer(dtype))
        _check_wide_layer(x, dw, pw, b)
        pw[0, 0, 3, 5] += 10.0
        _check_wide_layer(x, dw, pw, b)


@contextlib.contextmanager
def num_threads(count):
    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("bias,activation", [(True, "relu"), (False, None), (True, "relu6")])
def test_few_rows_gemm_runs_in_column_blocks_and_matches_reference(threads, bias, activation,
                                                                   monkeypatch):
    blocks = []
    split = ops._pointwise_by_column_blocks
    monkeypatch.setattr(ops, "_pointwise_by_column_blocks",
                        lambda rows, w, *args: blocks.append(w.shape[0]) or split(rows, w, *args))
    case = _case(batch=1, num_outputs=6, bias=bias, activation=activation)  # 4x3 = 12 rows
    x, dw, pw, b = make_tensors(case)
    with num_threads(threads), torch.no_grad():
        torch.testing.assert_close(call_ops(case, x, dw, pw, b), call_reference(case, x, dw, pw, b),
                                   **F64)
        pw.mul_(-2.0)  # the cached column blocks follow an in-place weight update
        torch.testing.assert_close(call_ops(case, x, dw, pw, b), call_reference(case, x, dw, pw, b),
                                   **F64)
    assert blocks == [threads, threads]


@pytest.mark.parametrize("threads,overrides", [
    (1, {}),                                            # nothing to split
    (2, {"num_outputs": 5}),                            # columns do not divide evenly
    (2, {"batch": 6, "height": 12, "width": 12}),       # 6 * 6 * 6 rows: one GEMM is as fast
])
def test_gemm_stays_whole_otherwise(threads, overrides, monkeypatch):
    monkeypatch.setattr(ops, "_pointwise_by_column_blocks", None)  # calling it would raise
    case = _case(**overrides)
    with num_threads(threads), torch.no_grad():
        _check_against_reference(case)


# ----------------------------------------------------------------------------
# Forward-mode AD, torch.func, and changing the output in place
# ----------------------------------------------------------------------------
F32 = dict(atol=1e-4, rtol=1e-4)


# The first dual tensor loads torch's jvp decompositions, which call torch.jit.script.
JIT_SCRIPT_IMPORT = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


@JIT_SCRIPT_IMPORT
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # float32: the kernel's case
def test_forward_mode_ad_gives_the_references_jvp(dtype):
    import torch.autograd.forward_ad as fwAD
    case = _case()
    primals = make_tensors(case, dtype=dtype)
    tangents = make_tensors(dict(case, seed=8), dtype=dtype)
    with fwAD.dual_level():
        out = call_ops(case, *(fwAD.make_dual(p, t) for p, t in zip(primals, tangents)))
        tangent = fwAD.unpack_dual(out).tangent
    with fwAD.dual_level():
        duals = (fwAD.make_dual(p.double(), t.double()) for p, t in zip(primals, tangents))
        expected = fwAD.unpack_dual(call_reference(case, *duals)).tangent
    assert tangent is not None and tangent.dtype == dtype
    torch.testing.assert_close(tangent.double(), expected, **(F64 if dtype == torch.float64 else F32))


@JIT_SCRIPT_IMPORT
def test_torch_func_per_sample_gradients_and_vmap_match_a_loop():
    from torch.func import grad, vmap
    case = _case()
    x, dw, pw, b = make_tensors(case, dtype=torch.float32)
    loss = lambda weights, image: call_ops(case, image[None], *weights).square().sum()  # noqa: E731
    per_sample = vmap(grad(loss), in_dims=(None, 0))((dw, pw, b), x)
    for index in range(x.shape[0]):
        weights = [t.double().requires_grad_() for t in (dw, pw, b)]
        expected = torch.autograd.grad(
            call_reference(case, x[index:index + 1].double(), *weights).square().sum(), weights)
        for got, want in zip(per_sample, expected):
            torch.testing.assert_close(got[index].double(), want, **F32)
    mapped = vmap(lambda image: call_ops(case, image[None], dw, pw, b)[0])(x)
    torch.testing.assert_close(mapped.double(), call_reference(case, x.double(), dw.double(), pw.double(),
                                                               b.double()), **F32)


@pytest.mark.parametrize("batch", [1, 4])  # PyTorch's backward, the kernel's (an image per thread)
def test_the_output_of_a_layer_without_activation_may_be_changed_in_place(batch):
    # A residual added in place (MobileNet v2's linear bottleneck): only an activation's
    # backward needs the output, so none is saved here.
    case = _case(activation=None, batch=batch, stride=(1, 1), num_outputs=3)
    x, dw, pw, b = make_tensors(case, dtype=torch.float32, requires_grad=True)
    out = call_ops(case, x, dw, pw, b)
    out += x
    grads = torch.autograd.grad(out.square().sum(), (x, dw, pw, b))
    tensors = [t.detach().double().requires_grad_() for t in (x, dw, pw, b)]
    expected = torch.autograd.grad((call_reference(case, *tensors) + tensors[0]).square().sum(), tensors)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got.double(), want, **F32)


# ----------------------------------------------------------------------------
# torch.compile
# ----------------------------------------------------------------------------
def test_torch_compile_full_graph_forward_and_backward():
    # aot_eager traces the whole path (dynamo + AOT autograd, which
    # functionalises the in-place epilogue) without inductor's C++ build,
    # which takes ~45 s on the 2-core test machine.
    torch._dynamo.reset()
    case = _case(stride=(2, 1))
    compiled = torch.compile(lambda *t: call_ops(case, *t), backend="aot_eager", fullgraph=True)
    _check_compiled_against_reference(compiled, case, make_tensors(case, requires_grad=True))


def _check_compiled_against_reference(compiled, case, tensors):
    """The compiled call's output and gradients against the float64 reference's."""
    actual = compiled(*tensors)
    expected = call_reference(case, *tensors)
    torch.testing.assert_close(actual, expected, **F64)
    grads = torch.autograd.grad(actual.sum(), tensors)
    for got, want in zip(grads, torch.autograd.grad(expected.sum(), tensors)):
        torch.testing.assert_close(got, want, **F64)


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_torch_compile_meets_the_padding_with_non_finite_weights_as_in_tf(bad):
    # A traced graph must hold for any weights: it pads explicitly (0 * inf is NaN, as in TF).
    torch._dynamo.reset()
    case = _case(activation=None, stride=(1, 1))
    x, dw, pw, b = make_tensors(case, dtype=torch.float32)  # oneDNN's conv: it skips padded taps
    dw[0, 0, 1, 0] = bad
    compiled = torch.compile(lambda *t: call_ops(case, *t), backend="aot_eager", fullgraph=True)
    expected = call_reference(case, *(t.double() for t in (x, dw, pw, b)))
    assert expected[:, 0].isnan().all()
    torch.testing.assert_close(compiled(x, dw, pw, b).double(), expected, equal_nan=True,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
def test_torch_compile_dynamic_shapes_with_gradients(stride):  # (that warning is Inductor's own import)
    # Inductor itself: its stride ordering once failed on this graph with symbolic sizes, and
    # with stride 2 it failed to print the guards of TF's padding written for any size.
    torch._dynamo.reset()
    case = _case(stride=stride)
    compiled = torch.compile(lambda *t: call_ops(case, *t), dynamic=True)
    for height in (8, 11):  # both parities: TF pads an even size by (0, 1), an odd one by (1, 1)
        tensors = make_tensors(dict(case, height=height), requires_grad=True)
        _check_compiled_against_reference(compiled, case, tensors)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_jit_trace_records_a_graph_that_runs_on_new_inputs(dtype):
    case = _case(stride=(1, 1))
    x, dw, pw, b = make_tensors(case, dtype=dtype)
    with warnings.catch_warnings(), pytest.warns(DeprecationWarning, match="jit.trace` is deprecated"):
        # The trace is specialised to this input shape (shapes decide the padding): new values only.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(lambda x: call_ops(case, x, dw, pw, b), (x,))
    other = torch.randn_like(x)
    expected = call_reference(case, other.double(), dw.double(), pw.double(), b.double())
    torch.testing.assert_close(traced(other).double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,multiplier", [(torch.float32, 2), (torch.float64, 1)])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_non_finite_weights_meet_the_padding_as_in_tf(dtype, multiplier, stride, requires_grad, bad):
    """TF multiplies padded taps by zero: a non-finite weight gives NaN at the borders."""
    case = _case(activation=None, multiplier=multiplier, stride=stride)
    x, dw, pw, b = make_tensors(case, dtype=dtype)
    dw[0, 0, 1, 0] = bad  # the top-left tap: padding on the first row and column
    if requires_grad:
        dw.requires_grad_(True)
    actual = call_ops(case, x, dw, pw, b)
    expected = call_reference(case, x.double(), dw.detach().double(), pw.double(), b.double())
    assert torch.equal(actual.isnan(), expected.isnan())
    torch.testing.assert_close(actual.double(), expected, equal_nan=True, rtol=1e-5, atol=1e-5)
    pads = ((1, 1), (1, 1)) if stride == (1, 1) else ((0, 1), (0, 1))
    depthwise = ops.depthwise_conv2d_nchw(x.permute(0, 3, 1, 2), dw, stride, (1, 1), pads)
    assert torch.equal(depthwise.isnan().any(dim=1).flatten(1), expected.isnan().any(dim=3).flatten(1))


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_non_finite_input_propagates_as_in_tf_with_asymmetric_padding(requires_grad, bad):
    """The zero tap would read row 1 (0 * inf = NaN); both paths must give TF's numbers."""
    case = _case(activation=None)
    x, dw, pw, b = make_tensors(case)
    x[0, 1, 2, 0] = bad
    if requires_grad:
        x.requires_grad_(True)
    actual = call_ops(case, x, dw, pw, b)
    torch.testing.assert_close(actual, call_reference(case, x, dw, pw, b), equal_nan=True, **F64)
