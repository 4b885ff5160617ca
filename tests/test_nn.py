"""sc.nn: SeparableConv2d and BatchNorm modules, and Template (TF1 model functions as modules)."""
import copy
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

import reference
import sepconv as sc
from sepconv._src.checkpoint import update_checkpoint_state, write_bundle
from ddp_worker import LEARNING_RATE
from template_net import NET_BUFFERS, NET_PARAMETERS, built_net, global_batch, net


@pytest.fixture(autouse=True)
def fresh_graph():
    with sc.Graph().as_default() as graph:
        yield graph


def _layer_variables(graph):
    return {v.op_name.split("/", 1)[1]: v for v in graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES)}


# ----------------------------------------------------------------------------
# SeparableConv2d: the same numbers as the functional layer
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("num_outputs", [5, None])
@pytest.mark.parametrize("stride,rate,padding", [(1, 1, "SAME"), (2, 1, "SAME"), (1, 2, "VALID")])
def test_module_equals_functional_layer(fresh_graph, data_format, num_outputs, stride, rate, padding):
    shape = (2, 9, 8, 3) if data_format == "NHWC" else (2, 3, 9, 8)
    x = torch.randn(shape)
    options = dict(stride=stride, rate=rate, padding=padding, data_format=data_format,
                   biases_initializer=sc.random_normal_initializer(seed=2))
    expected = sc.separable_conv2d(x, num_outputs, [3, 2], 2,
                                   weights_initializer=sc.xavier_initializer(seed=1), **options)
    module = sc.nn.SeparableConv2d(num_outputs, [3, 2], 2,
                                   weights_initializer=sc.xavier_initializer(seed=1), **options)
    actual = module(x)
    # A seeded initializer gives the module the layer's very weights.
    for name, variable in _layer_variables(fresh_graph).items():
        torch.testing.assert_close(getattr(module, name), variable, rtol=0, atol=0)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_module_with_copied_weights_matches_layer(fresh_graph):
    x = torch.randn(2, 7, 7, 4)
    expected = sc.separable_conv2d(x, 6, 3, 1, biases_initializer=sc.random_normal_initializer())
    module = sc.nn.SeparableConv2d(6, 3, 1, in_channels=4)
    state = {name: v.detach() for name, v in _layer_variables(fresh_graph).items()}
    module.load_state_dict(state)
    torch.testing.assert_close(module(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_batch_norm_normalizer_matches_functional_normalizer(fresh_graph, data_format):
    x = torch.randn(4, 6, 6, 3) if data_format == "NHWC" else torch.randn(4, 3, 6, 6)
    init = dict(weights_initializer=sc.xavier_initializer(seed=5), data_format=data_format)
    bn_params = dict(decay=0.9, scale=True, epsilon=0.01)
    expected = sc.separable_conv2d(x, 4, 3, 2, normalizer_fn=sc.batch_norm,
                                   normalizer_params={**bn_params, "data_format": data_format}, **init)
    module = sc.nn.SeparableConv2d(4, 3, 2, normalizer=sc.nn.BatchNorm(**bn_params, data_format=data_format),
                                   **init)
    torch.testing.assert_close(module(x), expected)
    variables = _layer_variables(fresh_graph)
    for name in ("moving_mean", "moving_variance"):
        torch.testing.assert_close(getattr(module.normalizer, name), variables[f"BatchNorm/{name}"])
    assert module.biases is None


def test_batch_norm_module_matches_functional_in_eval(fresh_graph):
    x = torch.randn(5, 4, 4, 3)
    bn = sc.nn.BatchNorm(3, scale=True, epsilon=0.1)
    with torch.no_grad():
        bn.moving_mean.uniform_()
        bn.moving_variance.uniform_(0.5, 2)
    expected = sc.batch_norm(x, scale=True, epsilon=0.1, is_training=False, param_initializers={
        "moving_mean": bn.moving_mean.clone(), "moving_variance": bn.moving_variance.clone()})
    torch.testing.assert_close(bn.eval()(x), expected)


# ----------------------------------------------------------------------------
# SeparableConv2d: PyTorch conventions
# ----------------------------------------------------------------------------
def test_state_dict_keys_follow_tf_names_and_layouts():
    conv = sc.nn.SeparableConv2d(8, [3, 2], 2, in_channels=5)
    assert {k: tuple(v.shape) for k, v in conv.state_dict().items()} == {
        "depthwise_weights": (3, 2, 5, 2), "pointwise_weights": (1, 1, 10, 8), "biases": (8,)}
    depthwise_only = sc.nn.SeparableConv2d(None, 3, 3, in_channels=2, biases_initializer=None)
    assert list(depthwise_only.state_dict()) == ["depthwise_weights"]
    assert depthwise_only.pointwise_weights is None and depthwise_only.biases is None
    normalized = sc.nn.SeparableConv2d(4, 3, 1, in_channels=2, normalizer=sc.nn.BatchNorm(scale=True))
    assert list(normalized.state_dict()) == [
        "depthwise_weights", "pointwise_weights", "normalizer.gamma", "normalizer.beta",
        "normalizer.moving_mean", "normalizer.moving_variance"]


def test_lazy_in_channels_are_inferred_from_the_first_input():
    conv = sc.nn.SeparableConv2d(None, 3, 2, data_format="NCHW")
    assert conv.in_channels is None and conv.out_channels is None and conv.has_uninitialized_params()
    conv(torch.randn(1, 7, 5, 5))
    assert conv.in_channels == 7 and conv.out_channels == 14
    assert conv.depthwise_weights.shape == (3, 3, 7, 2) and conv.biases.shape == (14,)
    assert not conv.has_uninitialized_params()


def test_lazy_module_takes_shapes_from_load_state_dict():
    source = sc.nn.SeparableConv2d(4, 3, 1, in_channels=6)
    lazy = sc.nn.SeparableConv2d(4, 3, 1)
    lazy.load_state_dict(source.state_dict())
    assert lazy.in_channels == 6
    x = torch.randn(1, 5, 5, 6)
    torch.testing.assert_close(lazy(x), source(x))


@pytest.mark.parametrize("other", [dict(kernel_size=5), dict(depth_multiplier=2), dict(num_outputs=7)])
def test_a_lazy_module_refuses_weights_its_arguments_contradict(tmp_path, other):
    arguments = dict(num_outputs=6, kernel_size=3, depth_multiplier=1)
    source = sc.nn.SeparableConv2d(**{**arguments, **other}, in_channels=4)
    state = source.state_dict()
    prefix = write_bundle(str(tmp_path / "model.ckpt"), {f"SeparableConv2d/{key}": value.numpy()
                                                         for key, value in state.items()})
    lazy = sc.nn.SeparableConv2d(**arguments)
    with pytest.raises(RuntimeError, match=r"Cannot load (depthwise|pointwise)_weights of shape .*"
                                           r"kernel_size=\(3, 3\), depth_multiplier=1 and num_outputs=6"):
        lazy.load_state_dict(state)
    with pytest.raises(ValueError, match=r"model.ckpt has (depthwise|pointwise)_weights of shape"):
        lazy.load_tf_checkpoint(prefix)
    assert lazy.in_channels is None and lazy.has_uninitialized_params()  # nothing taken


def test_a_lazy_module_loads_its_biases_alone_and_refuses_a_weight_of_another_rank():
    lazy = sc.nn.SeparableConv2d(6, 3, 1)
    lazy.load_state_dict({"biases": torch.ones(6)}, strict=False)
    assert torch.equal(lazy.biases, torch.ones(6)) and lazy.in_channels is None
    with pytest.raises(RuntimeError, match=r"Cannot load depthwise_weights of shape \[3, 3, 4\]"):
        sc.nn.SeparableConv2d(6, 3, 1).load_state_dict({"depthwise_weights": torch.zeros(3, 3, 4)},
                                                      strict=False)


@pytest.mark.parametrize("num_outputs,loaded", [
    (4, {"pointwise_weights": torch.randn(1, 1, 6, 4), "biases": torch.zeros(4)}),
    (None, {"biases": torch.zeros(6)}),
], ids=["pointwise_weights", "biases-without-pointwise-stage"])
def test_a_lazy_module_refuses_inputs_its_loaded_weights_contradict(num_outputs, loaded):
    conv = sc.nn.SeparableConv2d(num_outputs, 3, 2)
    conv.load_state_dict(loaded, strict=False)
    assert conv.in_channels == 3
    with pytest.raises(ValueError, match=r"Invalid inputs shape \[1, 5, 5, 5\]: expected 3 channels"):
        conv(torch.randn(1, 5, 5, 5))
    assert conv.has_uninitialized_params() and conv.in_channels == 3  # nothing materialised
    assert conv(torch.randn(1, 5, 5, 3)).shape == (1, 5, 5, 6 if num_outputs is None else 4)
    assert conv.depthwise_weights.shape == (3, 3, 3, 2)


def test_a_lazy_batch_norm_keeps_what_it_loaded_and_refuses_inputs_that_contradict_it():
    bn = sc.nn.BatchNorm(scale=True).eval()
    mean = torch.arange(4.0)
    assert bn.load_state_dict({"moving_mean": mean}, strict=False).missing_keys == [
        "gamma", "beta", "moving_variance"]
    assert bn.num_features == 4
    with pytest.raises(ValueError, match=r"Invalid inputs shape \[2, 3, 3, 5\]: expected 4 channels"):
        bn(torch.randn(2, 3, 3, 5))
    assert bn.has_uninitialized_params()  # nothing materialised
    x = torch.randn(2, 3, 3, 4)
    expected = (x - mean) / torch.sqrt(torch.tensor(1.0 + bn.epsilon))  # gamma 1, beta 0, variance 1
    torch.testing.assert_close(bn(x), expected)
    assert torch.equal(bn.moving_mean, mean)


def test_a_lazy_module_names_a_refused_weight_by_its_full_state_dict_key():
    model = torch.nn.Sequential(sc.nn.SeparableConv2d(4, 3, 1), sc.nn.SeparableConv2d(4, 3, 1))
    state = {"0.depthwise_weights": torch.zeros(3, 3, 3, 1), "1.depthwise_weights": torch.zeros(5, 5, 4, 1)}
    with pytest.raises(RuntimeError, match=r"Cannot load 1\.depthwise_weights of shape \[5, 5, 4, 1\]"):
        model.load_state_dict(state, strict=False)


def test_lazy_weights_missing_from_a_checkpoint_are_created_on_the_first_call(tmp_path):
    depthwise = np.full((3, 3, 2, 1), 0.5, np.float32)
    prefix = write_bundle(str(tmp_path / "model.ckpt"), {"SeparableConv2d/depthwise_weights": depthwise})
    lazy = sc.nn.SeparableConv2d(4, 3, 1)
    assert lazy.load_tf_checkpoint(prefix, strict=False).missing_keys == [
        "SeparableConv2d/pointwise_weights", "SeparableConv2d/biases"]
    assert lazy(torch.ones(1, 5, 5, 2)).shape == (1, 5, 5, 4)
    assert torch.equal(lazy.depthwise_weights, torch.from_numpy(depthwise))
    assert lazy.pointwise_weights.shape == (1, 1, 2, 4) and torch.count_nonzero(lazy.pointwise_weights) > 0


class _FailsOnce:
    """An initializer that raises on its first call, then returns ``value``s."""

    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self, shape, dtype=None):
        self.calls += 1
        if self.calls == 1:
            raise KeyboardInterrupt
        return torch.full(shape, self.value, dtype=dtype)


@pytest.mark.parametrize("make, key", [
    (lambda init: sc.nn.SeparableConv2d(4, 3, 1, biases_initializer=init, activation_fn=None), "biases"),
    (lambda init: sc.nn.BatchNorm(param_initializers={"moving_variance": init}).eval(), "moving_variance"),
])
def test_a_first_call_whose_initializer_fails_leaves_every_lazy_tensor_lazy(make, key):
    initializer = _FailsOnce(2.0)
    module = make(initializer)
    x = torch.randn(2, 5, 5, 3)
    with pytest.raises(KeyboardInterrupt):
        module(x)
    assert all(torch.nn.parameter.is_lazy(t) for t in module.state_dict(keep_vars=True).values())
    module(x)
    assert initializer.calls == 2 and torch.equal(getattr(module, key), torch.full((4 if key == "biases" else 3,), 2.0))


@pytest.mark.parametrize("make", [
    lambda: sc.nn.SeparableConv2d(4, 3, 1, in_channels=3,
                                  weights_initializer=lambda shape, dtype=None: torch.ones(shape[-1])),
    lambda: sc.nn.BatchNorm(3, param_initializers={"moving_variance": lambda shape, dtype=None: torch.tensor(5.0)}),
    lambda: sc.nn.BatchNorm(param_initializers={"beta": lambda shape, dtype=None: torch.ones(2)})(torch.ones(1, 2, 2, 3)),
])
def test_an_initializer_of_the_wrong_shape_is_refused_not_broadcast(make):
    with pytest.raises(ValueError, match=r"Initializer of (depthwise_weights|moving_variance|beta) returned "
                                         r"shape \[\d*\], expected \[3(, 3, 3, 1)?\]"):
        make()


def test_reset_parameters_draws_xavier_uniform_within_the_limit():
    torch.manual_seed(0)
    conv = sc.nn.SeparableConv2d(300, 3, 4, in_channels=200)
    limits = {"depthwise_weights": math.sqrt(6 / (9 * 200 + 9 * 4)),
              "pointwise_weights": math.sqrt(6 / (800 + 300))}
    for _ in range(2):  # the constructor's draw, then an explicit reset
        for name, limit in limits.items():
            weights = getattr(conv, name)
            assert weights.abs().max() <= limit
            assert weights.abs().max() > 0.99 * limit
            # Uniform(-a, a) has variance a^2 / 3.
            assert weights.var().item() == pytest.approx(limit ** 2 / 3, rel=0.05)
            assert abs(weights.mean().item()) < 0.02 * limit
        assert torch.count_nonzero(conv.biases) == 0
        before = conv.depthwise_weights.detach().clone()
        conv.reset_parameters()
        assert not torch.equal(before, conv.depthwise_weights)


def test_extra_repr_names_the_options():
    conv = sc.nn.SeparableConv2d(8, 3, 2, stride=2, padding="valid", data_format="NCHW",
                                 activation_fn=None, in_channels=4)
    assert repr(conv) == ("SeparableConv2d(in_channels=4, num_outputs=8, kernel_size=(3, 3), "
                          "depth_multiplier=2, stride=(2, 2), padding='VALID', data_format='NCHW', "
                          "activation_fn=None)")
    assert "in_channels=None" in repr(sc.nn.SeparableConv2d(8, 3, 1))
    assert "activation_fn=relu" in repr(sc.nn.SeparableConv2d(8, 3, 1))
    assert repr(sc.nn.BatchNorm(3, scale=True)) == (
        "BatchNorm(3, decay=0.999, epsilon=0.001, center=True, scale=True, data_format='NHWC')")


def test_device_and_dtype_factory_kwargs():
    conv = sc.nn.SeparableConv2d(4, 3, 2, in_channels=3, dtype=torch.float64,
                                 normalizer=sc.nn.BatchNorm(dtype=torch.float64))
    assert {t.dtype for t in conv.state_dict().values()} == {torch.float64}
    assert conv(torch.randn(1, 5, 5, 3, dtype=torch.float64)).dtype == torch.float64
    meta = sc.nn.SeparableConv2d(4, 3, 2, device="meta")
    out = meta(torch.empty(2, 6, 6, 3, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 6, 6, 4)
    assert meta.depthwise_weights.device.type == "meta"


def test_module_to_moves_parameters_and_keeps_working():
    conv = sc.nn.SeparableConv2d(4, 3, 2, in_channels=3).to(torch.float64)
    assert conv.depthwise_weights.dtype == torch.float64
    assert conv(torch.ones(1, 4, 4, 3, dtype=torch.float64)).dtype == torch.float64


def test_optimizer_step_changes_the_weights():
    torch.manual_seed(0)
    conv = sc.nn.SeparableConv2d(2, 3, 1, in_channels=3, activation_fn=None)
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.1)
    conv(torch.randn(2, 5, 5, 3)).square().mean().backward()
    optimizer.step()
    for key, value in conv.state_dict().items():
        assert not torch.equal(value, before[key]), key


def test_trainable_false_freezes_the_weights():
    conv = sc.nn.SeparableConv2d(2, 3, 1, in_channels=3, trainable=False)
    assert not any(p.requires_grad for p in conv.parameters())
    assert "trainable=False" in repr(conv)


def test_regularization_loss_sums_the_regularizers():
    conv = sc.nn.SeparableConv2d(2, 3, 1, in_channels=3, weights_regularizer=sc.l2_regularizer(0.5),
                                 biases_regularizer=sc.l1_regularizer(1.0),
                                 biases_initializer=sc.ones_initializer())
    expected = 0.25 * (conv.depthwise_weights.square().sum() + conv.pointwise_weights.square().sum()) + 2
    torch.testing.assert_close(conv.regularization_loss(), expected)
    assert sc.nn.SeparableConv2d(2, 3, 1, in_channels=3).regularization_loss().item() == 0
    lazy = sc.nn.SeparableConv2d(2, 3, 1, weights_regularizer=sc.l2_regularizer(0.5),
                                 dtype=torch.float64)
    zero = lazy.regularization_loss()  # no values yet
    assert zero.item() == 0 and zero.dtype == torch.float64
    lazy(torch.ones(1, 4, 4, 3, dtype=torch.float64))
    assert lazy.regularization_loss().item() > 0


def test_batch_norm_updates_moving_statistics_only_in_training():
    bn = sc.nn.BatchNorm(decay=0.5)
    x = torch.randn(16, 3, 3, 2) * 3 + 1
    bn(x)
    mean = x.mean(dim=(0, 1, 2))
    torch.testing.assert_close(bn.moving_mean, 0.5 * mean)
    frozen = bn.moving_mean.clone()
    bn.eval()(x)
    assert torch.equal(bn.moving_mean, frozen)
    assert [name for name, _ in bn.named_buffers()] == ["moving_mean", "moving_variance"]
    assert [name for name, _ in bn.named_parameters()] == ["beta"]


@pytest.mark.parametrize("fused", [None, True, False])
def test_batch_norm_module_follows_fused_as_the_functional_layer(fresh_graph, fused):
    x = torch.randn(3, 2, 2, 4)
    bn = sc.nn.BatchNorm(decay=0.0, fused=fused)
    bn(x)
    sc.batch_norm(x, decay=0.0, fused=fused)
    torch.testing.assert_close(bn.moving_variance, fresh_graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES)[-1].detach())
    assert ("fused" in repr(bn)) == (fused is not None)


def test_batch_norm_module_returns_the_dtype_of_half_inputs():
    bn = sc.nn.BatchNorm(scale=True)  # float32 statistics, as TF keeps them for half inputs
    x = torch.randn(4, 3, 3, 2)
    y = bn(x.half())
    assert y.dtype == torch.float16 and bn.moving_mean.dtype == torch.float32
    torch.testing.assert_close(y, sc.nn.BatchNorm(scale=True)(x.half().float()).half())


@pytest.mark.parametrize("make,error,match", [
    (lambda: sc.nn.SeparableConv2d(4, 3, 1, padding="full"), ValueError, r"padding string 'full'.*SAME"),
    (lambda: sc.nn.SeparableConv2d(4, 3, 1, data_format="NWHC"), ValueError, "data_format has to be"),
    (lambda: sc.nn.SeparableConv2d(4, [3, 3, 3], 1), ValueError, r"kernel_size \[3, 3, 3\].*length 2"),
    (lambda: sc.nn.SeparableConv2d(4, 3, 0), ValueError, r"depth_multiplier 0: expected an int >= 1"),
    (lambda: sc.nn.SeparableConv2d(4, 3, 1.5), TypeError, r"depth_multiplier 1.5"),
    (lambda: sc.nn.SeparableConv2d(4, 3, 1, stride=2, rate=2), ValueError, "both above 1"),
    (lambda: sc.nn.SeparableConv2d(4, 3, 1, activation_fn="relu"), TypeError, "activation_fn 'relu'"),
    (lambda: sc.nn.SeparableConv2d(4, 3, 1, in_channels=0), ValueError, "in_channels 0"),
    (lambda: sc.nn.SeparableConv2d(4, 3, 1, data_format="NCHW", normalizer=sc.nn.BatchNorm()),
     ValueError, "data_format='NHWC'.*must match the layer's data_format 'NCHW'"),
    (lambda: sc.nn.BatchNorm(decay=1.5), ValueError, r"decay 1.5: must be in \[0.0, 1.0\]"),
    (lambda: sc.nn.BatchNorm(fused=0), TypeError, r"Invalid fused 0: expected a bool"),
    (lambda: sc.nn.BatchNorm(param_initializers={"mean": None}), ValueError, r"keys \['mean'\]"),
    (lambda: sc.nn.BatchNorm(param_initializers={"beta": 0.0}), TypeError,
     r"Invalid param_initializers\['beta'\] 0.0: expected a callable"),
    (lambda: sc.nn.BatchNorm(4, param_initializers={"gamma": None}), TypeError,
     r"Invalid param_initializers\['gamma'\] None: expected a callable"),
    (lambda: sc.nn.BatchNorm(epsilon=0), ValueError, r"Invalid epsilon 0: must be > 0"),
    (lambda: sc.nn.BatchNorm(3, dtype=torch.int32, trainable=False), TypeError,
     r"Invalid dtype torch.int32: expected a floating-point dtype"),
    (lambda: sc.nn.SeparableConv2d(4, 3, 1, in_channels=2, dtype="int64"), TypeError,
     r"Invalid dtype torch.int64: expected a floating-point dtype"),
    (lambda: sc.nn.SeparableConv2d(4, 3, 1, dtype=torch.int32), TypeError, r"Invalid dtype torch.int32"),
    (lambda: sc.nn.SeparableConv2d(4, np.array([1.5, 3]), 1), TypeError,
     r"Invalid kernel_size 1.5: expected an int >= 1"),
    (lambda: sc.nn.SeparableConv2d(4, 3, 1, stride=np.array(2.0)), TypeError,
     r"Invalid stride 2.0: expected an int >= 1"),
    (lambda: sc.nn.SeparableConv2d(4, 3, 1, device="gpu9"), ValueError, r"Invalid device 'gpu9'"),
    (lambda: sc.nn.BatchNorm(3, device="gpu9"), ValueError, r"Invalid device 'gpu9'"),
])
def test_invalid_arguments_raise_naming_the_argument(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("value,expected", [
    (np.array([5, 3]), (5, 3)), (np.array(3), (3, 3)), (np.int64(2), (2, 2)),
    ([np.int32(1), 3], (1, 3)), (torch.Size([3, 1]), (3, 1)),
])
def test_kernel_size_takes_numpy_integers_and_integer_arrays(value, expected):
    assert sc.nn.SeparableConv2d(4, value, 1).kernel_size == expected


def test_batch_norm_module_epsilon_is_tf_fused_kernel_minimum_as_the_layer_uses():
    x = torch.randn(4, 3, 3, 2)
    module = sc.nn.BatchNorm(scale=True, epsilon=1e-8)
    torch.testing.assert_close(module(x), sc.batch_norm(x, scale=True, epsilon=1e-8))
    torch.testing.assert_close(module.eval()(x), reference.batch_norm_inference(
        x, module.moving_mean, module.moving_variance, module.beta, module.gamma, 1.001e-5))


def test_folded_batch_norm_uses_the_same_epsilon_as_the_unfolded_one():
    x = torch.randn(2, 6, 6, 3)
    conv = _eval_conv_with_statistics(sc.nn.BatchNorm(8, epsilon=1e-9))
    with torch.no_grad():
        conv.normalizer.moving_variance.fill_(1e-6)  # where epsilon 1e-9 and 1.001e-5 differ
    folded = conv(x)
    conv.normalizer.register_forward_hook(lambda module, args, out: None)  # forces the call
    torch.testing.assert_close(folded, conv(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("features", [1, 5])
@pytest.mark.parametrize("training", [True, False])
def test_a_batch_norm_of_another_size_raises_in_train_and_eval(features, training):
    conv = sc.nn.SeparableConv2d(6, 3, 1, in_channels=4, normalizer=sc.nn.BatchNorm(features))
    with pytest.raises(ValueError, match=rf"shape \[2, 5, 5, 6\]: expected {features} channels"):
        conv.train(training)(torch.ones(2, 5, 5, 4))


def test_wrong_input_channels_raise():
    conv = sc.nn.SeparableConv2d(4, 3, 1, in_channels=3)
    with pytest.raises(ValueError, match=r"shape \[1, 5, 5, 2\]: expected 3 channels on axis 3"):
        conv(torch.ones(1, 5, 5, 2))
    with pytest.raises(ValueError, match="rank 3"):
        conv(torch.ones(5, 5, 3))


# ----------------------------------------------------------------------------
# Template
# ----------------------------------------------------------------------------
def test_template_registers_trainable_variables_as_parameters_and_others_as_buffers():
    model = built_net()
    assert [name for name, _ in model.named_parameters()] == NET_PARAMETERS
    assert [name for name, _ in model.named_buffers()] == NET_BUFFERS
    assert list(model.state_dict()) == NET_PARAMETERS + NET_BUFFERS
    graph_names = [v.op_name for v in model.graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES)]
    assert sorted(graph_names) == sorted(NET_PARAMETERS + NET_BUFFERS)
    # The module's tensors are the graph's variables.
    for variable in model.graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES):
        assert model.get_parameter(variable.op_name) is variable if variable.requires_grad \
            else model.get_buffer(variable.op_name) is variable


def test_template_is_unbuilt_until_first_call_and_later_calls_reuse():
    model = sc.nn.Template(net)
    assert not model.built and list(model.parameters()) == []
    first = model(torch.randn(2, 8, 8, 3))
    assert model.built and first.shape == (2, 4, 4, 3)
    model(torch.randn(2, 8, 8, 3))
    assert len(model.graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES)) == 15
    assert [name for name, _ in model.named_parameters()] == NET_PARAMETERS


def test_template_output_equals_calling_the_function_in_a_graph(fresh_graph):
    model = built_net().eval()
    x = torch.randn(2, 8, 8, 3)
    net(torch.zeros(1, 8, 8, 3), is_training=False)  # creates the variables in the test's graph
    for variable in fresh_graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES):
        with torch.no_grad():
            variable.copy_(model.state_dict()[variable.op_name])
    with sc.variable_scope(sc.get_variable_scope(), reuse=True):
        expected = net(x, is_training=False)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_state_dict_round_trips_into_a_fresh_template():
    model = built_net()
    model(torch.randn(4, 8, 8, 3))  # train mode: moving statistics move away from their init
    fresh = built_net()
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(2, 8, 8, 3)
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x))
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


def test_torch_save_and_load_of_state_dict_and_whole_module(tmp_path):
    model = built_net()
    model(torch.randn(4, 8, 8, 3))
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    fresh = built_net()
    fresh.load_state_dict(torch.load(tmp_path / "weights.pt"))
    x = torch.randn(1, 8, 8, 3)
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x))
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    torch.testing.assert_close(loaded(x), model(x))
    variables = loaded.graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES)
    assert all(dict(loaded.named_parameters(), **dict(loaded.named_buffers()))[v.op_name] is v
               for v in variables)
    loaded(x)  # the unpickled graph still runs the function


def test_deepcopy_keeps_graph_and_module_tensors_identical():
    model = built_net()
    clone = copy.deepcopy(model)
    weights = clone.get_parameter("Net/Conv_0/depthwise_weights")
    assert weights is not model.get_parameter("Net/Conv_0/depthwise_weights")
    assert clone.graph is not model.graph
    assert any(v is weights for v in clone.graph.get_collection(sc.GraphKeys.TRAINABLE_VARIABLES))


def test_moving_statistics_update_in_train_mode_but_not_in_eval_mode():
    model = built_net()
    name = "Net/Conv_0/BatchNorm/moving_mean"
    assert torch.count_nonzero(model.get_buffer(name)) == 0  # build() leaves them at init
    model.eval()(torch.randn(4, 8, 8, 3))
    assert torch.count_nonzero(model.get_buffer(name)) == 0
    model.train()(torch.randn(4, 8, 8, 3) + 5)
    assert torch.count_nonzero(model.get_buffer(name)) == 8


def test_build_creates_variables_without_training_them():
    model = sc.nn.Template(net).build(torch.randn(4, 8, 8, 3) + 5)
    for name in NET_BUFFERS:
        expected = 0.0 if name.endswith("moving_mean") else 1.0
        assert torch.equal(model.get_buffer(name), torch.full((8,), expected)), name
    assert model.build(torch.randn(4, 8, 8, 3)) is model  # a second build is a no-op


def test_explicit_is_training_argument_wins_over_the_module_mode():
    model = built_net()
    model.eval()(torch.randn(4, 8, 8, 3) + 5, is_training=True)
    assert torch.count_nonzero(model.get_buffer("Net/Conv_0/BatchNorm/moving_mean")) == 8


def test_to_float64_keeps_graph_and_module_in_sync():
    model = built_net()
    before = model.graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES)
    model.to(torch.float64)
    after = model.graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES)
    assert all(a is b for a, b in zip(before, after))
    tensors = dict(model.named_parameters(), **dict(model.named_buffers()))
    for variable in after:
        assert tensors[variable.op_name] is variable and variable.dtype == torch.float64
    assert model(torch.randn(1, 8, 8, 3, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError, match="Trying to share variable .* dtype"):
        model(torch.randn(1, 8, 8, 3))


def test_to_another_device_moves_graph_variables_with_the_module():
    # No accelerator here: the meta device stands in for one (no data, same bookkeeping).
    model = built_net().to("meta")
    variables = model.graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES)
    assert {v.device.type for v in variables} == {"meta"}
    tensors = dict(model.named_parameters(), **dict(model.named_buffers()))
    assert all(tensors[v.op_name] is v for v in variables)
    out = model.eval()(torch.empty(2, 8, 8, 3, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 4, 4, 3)


def test_load_state_dict_with_assign_keeps_graph_variables():
    model = built_net()
    state = {k: v.clone() + 1 for k, v in model.state_dict().items()}
    model.load_state_dict(state, assign=True)
    for variable in model.graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES):
        assert torch.equal(variable, state[variable.op_name])
        assert dict(model.named_parameters(), **dict(model.named_buffers()))[variable.op_name] is variable


def test_optimizer_trains_template_parameters_seen_by_the_function():
    model = built_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.randn(4, 8, 8, 3)
    loss = model(x).square().mean()
    loss.backward()
    optimizer.step()
    assert model(x).square().mean() < loss
    assert torch.equal(model.graph.get_collection(sc.GraphKeys.TRAINABLE_VARIABLES)[0],
                       model.get_parameter(NET_PARAMETERS[0]))


def test_functional_call_substitutes_the_module_tensors():
    model = built_net().eval()
    zeros = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    out = torch.func.functional_call(model, zeros, (torch.randn(1, 8, 8, 3),))
    assert torch.count_nonzero(out) == 0


def test_bound_keyword_arguments_reach_the_function():
    model = sc.nn.Template(net, num_classes=5)
    assert model(torch.randn(1, 8, 8, 3)).shape == (1, 4, 4, 5)


def test_output_collections_do_not_keep_activations_alive():
    model = built_net()
    model(torch.randn(1, 8, 8, 3))
    assert model.graph.get_collection("end_points") == []
    assert len(model.graph.get_collection(sc.GraphKeys.MODEL_VARIABLES)) == 15


def test_regularization_losses_come_from_the_graph():
    def regularized(x):
        return sc.separable_conv2d(x, 2, 1, 1, weights_regularizer=sc.l2_regularizer(2.0))
    model = sc.nn.Template(regularized).build(torch.ones(1, 2, 2, 1))
    total = sum(model.regularization_losses())
    expected = sum(p.square().sum() for n, p in model.named_parameters() if "weights" in n)
    torch.testing.assert_close(total, expected)
    assert {loss.dtype for loss in model.to(torch.float64).regularization_losses()} == {torch.float64}
    # Across incompatible tensor types torch replaces parameters; the losses follow the new ones.
    assert {loss.device.type for loss in model.to("meta").regularization_losses()} == {"meta"}


def test_load_state_dict_with_wrong_shapes_raises():
    model = built_net()
    state = model.state_dict()
    state["Net/Logits/biases"] = torch.zeros(7)
    with pytest.raises(RuntimeError, match=r"size mismatch for Net/Logits/biases.*\[7\].*\[3\]"):
        model.load_state_dict(state)


def test_load_state_dict_reports_missing_and_unexpected_tf_names():
    model = built_net()
    state = model.state_dict()
    state["Net/Other/weights"] = state.pop("Net/Logits/biases")
    with pytest.raises(RuntimeError, match=r'(?s)Missing key\(s\).*"Net/Logits/biases".*'
                                           r'Unexpected key\(s\).*"Net/Other/weights"'):
        model.load_state_dict(state)


def test_load_state_dict_into_an_unbuilt_template_raises():
    with pytest.raises(RuntimeError, match=r"Template is not built: call build\(example_inputs\)"):
        sc.nn.Template(net).load_state_dict(built_net().state_dict())


def test_creating_a_variable_after_the_first_call_raises():
    calls = []

    def growing(x):
        calls.append(1)
        return x * sc.get_variable(f"w{len(calls)}", [1], initializer=sc.ones_initializer())

    model = sc.nn.Template(growing)
    model(torch.ones(1))
    with pytest.raises(ValueError, match="Variable w2 does not exist"):
        model(torch.ones(1))
    assert [name for name, _ in model.named_parameters()] == ["w1"]


def test_a_failed_first_call_registers_nothing():
    def failing(x):
        sc.get_variable("w", [1])
        raise RuntimeError("boom")

    model = sc.nn.Template(failing)
    with pytest.raises(RuntimeError, match="boom"):
        model(torch.ones(1))
    assert list(model.parameters()) == [] and not model.built
    assert model.graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES) == []


def test_variable_names_with_dots_are_refused():
    def dotted(x):
        return x * sc.get_variable("w.1", [1], initializer=sc.ones_initializer())

    with pytest.raises(ValueError, match=r"'w.1' contains '.'"):
        sc.nn.Template(dotted)(torch.ones(1))


def test_template_requires_a_callable():
    with pytest.raises(TypeError, match="Invalid fn 3: expected a callable"):
        sc.nn.Template(3)


def test_template_repr():
    assert repr(sc.nn.Template(net)) == "Template(fn=net, variables=unbuilt)"
    assert repr(built_net()) == "Template(fn=net, variables=15)"


def test_template_of_nn_modules_inside_a_function():
    # A Template works with plain modules too: only graph variables are registered.
    conv = sc.nn.SeparableConv2d(2, 3, 1, in_channels=1)
    model = sc.nn.Template(lambda x: conv(x) * sc.get_variable("scale", [], initializer=sc.ones_initializer()))
    out = model(torch.ones(1, 4, 4, 1))
    torch.testing.assert_close(out, conv(torch.ones(1, 4, 4, 1)))
    assert [name for name, _ in model.named_parameters()] == ["scale"]


# ----------------------------------------------------------------------------
# TF checkpoints
# ----------------------------------------------------------------------------
def _numpy_state(tensors, prefix=""):
    return {prefix + k: v.detach().numpy() for k, v in tensors.items()}


def test_separable_conv2d_loads_a_tf_checkpoint_lazily(tmp_path):
    source = sc.nn.SeparableConv2d(4, 3, 2, in_channels=3, normalizer=sc.nn.BatchNorm(4, scale=True))
    with torch.no_grad():
        source.normalizer.moving_mean.uniform_()
    tensors = {"global_step": np.array(7, dtype=np.int64)}
    tensors.update(_numpy_state({v: t for v, t in zip(source.tf_variable_names().values(),
                                                     source.state_dict().values())},
                                "layer/SeparableConv2d/"))
    prefix = write_bundle(str(tmp_path / "model.ckpt"), tensors)
    lazy = sc.nn.SeparableConv2d(4, 3, 2, normalizer=sc.nn.BatchNorm(scale=True), dtype=torch.float64)
    result = lazy.load_tf_checkpoint(prefix, scope="layer/SeparableConv2d")
    assert result == (([], []))
    assert lazy.in_channels == 3 and lazy.depthwise_weights.dtype == torch.float64
    x = torch.randn(1, 5, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(lazy.eval()(x), source.eval().double()(x))


def test_load_tf_checkpoint_errors(tmp_path):
    prefix = write_bundle(str(tmp_path / "model.ckpt"), {
        "SeparableConv2d/depthwise_weights": np.zeros((3, 3, 2, 1), np.float32)})
    conv = sc.nn.SeparableConv2d(4, 3, 1, in_channels=2)
    with pytest.raises(ValueError, match=r"\['SeparableConv2d/pointwise_weights', "
                                         r"'SeparableConv2d/biases'\] not found in checkpoint"):
        conv.load_tf_checkpoint(prefix)
    result = conv.load_tf_checkpoint(prefix, strict=False)
    assert result.missing_keys == ["SeparableConv2d/pointwise_weights", "SeparableConv2d/biases"]
    assert torch.count_nonzero(conv.depthwise_weights) == 0
    wide = sc.nn.SeparableConv2d(4, 3, 1, in_channels=5)
    with pytest.raises(ValueError, match=r"SeparableConv2d/depthwise_weights has shape \[3, 3, 2, 1\], "
                                         r"but SeparableConv2d 'depthwise_weights' has shape \[3, 3, 5, 1\]"):
        wide.load_tf_checkpoint(prefix, strict=False)
    with pytest.raises(ValueError, match=r"Checkpoint not found: .*missing\.ckpt\.index"):
        conv.load_tf_checkpoint(str(tmp_path / "missing.ckpt"))


def test_template_loads_a_tf_checkpoint_by_variable_name(tmp_path):
    source = built_net()
    source(torch.randn(4, 8, 8, 3))
    tensors = _numpy_state(source.state_dict())
    tensors["global_step"] = np.array(3, dtype=np.int64)
    write_bundle(str(tmp_path / "model.ckpt-3"), tensors)
    update_checkpoint_state(str(tmp_path), str(tmp_path / "model.ckpt-3"))
    model = built_net()
    result = model.load_tf_checkpoint(tmp_path)  # a directory resolves to its latest checkpoint
    assert result.missing_keys == [] and result.unexpected_keys == ["global_step"]
    x = torch.randn(1, 8, 8, 3)
    torch.testing.assert_close(model.eval()(x), source.eval()(x))


def test_unbuilt_template_cannot_load_a_tf_checkpoint(tmp_path):
    with pytest.raises(RuntimeError, match="not built"):
        sc.nn.Template(net).load_tf_checkpoint(tmp_path / "x")


def _one_sgd_step_per_shard(shards):
    """Single-process expectations: per-shard gradients and moving statistics."""
    gradients, buffers = [], []
    for shard in shards:
        model = built_net()
        model(shard).square().mean().backward()
        gradients.append({name: p.grad for name, p in model.named_parameters()})
        buffers.append({name: b.detach() for name, b in model.named_buffers()})
    return gradients, buffers


def test_template_trains_under_distributed_data_parallel(tmp_path):
    """Two torchrun ranks, each with half of the batch: DDP averages the gradients."""
    tests_dir = pathlib.Path(__file__).parent
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(tests_dir), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(tests_dir / "ddp_worker.py"), str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    gradients, buffers = _one_sgd_step_per_shard(global_batch().chunk(2))
    initial = dict(built_net().named_parameters())
    for state in ranks:
        assert list(state) == NET_PARAMETERS + NET_BUFFERS
        for name in NET_PARAMETERS:
            mean_gradient = (gradients[0][name] + gradients[1][name]) / 2
            torch.testing.assert_close(state[name], initial[name] - LEARNING_RATE * mean_gradient,
                                       msg=name)
    for state, own in zip(ranks, buffers):  # each rank keeps the statistics of its own shard
        for name in NET_BUFFERS:
            torch.testing.assert_close(state[name], own[name], msg=name)
    assert not torch.equal(ranks[0][NET_BUFFERS[0]], ranks[1][NET_BUFFERS[0]])


MOBILENET = pathlib.Path(__file__).parent / "fixtures" / "mobilenet_v1_025"


def mobilenet_logits(images, is_training=True):
    """slim's 0.25 MobileNet v1 with 10 classes, as tools/gen_mobilenet.py built it in TF."""
    from sepconv.models import mobilenet_v1, mobilenet_v1_arg_scope
    with sc.arg_scope(mobilenet_v1_arg_scope(is_training=is_training)):
        logits, _ = mobilenet_v1(images, num_classes=10, depth_multiplier=0.25, is_training=is_training)
    return logits


def test_template_restores_a_tensorflow_written_checkpoint():
    with np.load(MOBILENET / "expected.npz") as fixture:
        inputs, tf_logits = torch.from_numpy(fixture["input"]), fixture["logits"]
    model = sc.nn.Template(mobilenet_logits).build(inputs)
    assert len(model.state_dict()) == 137
    assert "MobilenetV1/Conv2d_1_depthwise/depthwise_weights" in model.state_dict()
    before = model.eval()(inputs).detach().numpy()
    result = model.load_tf_checkpoint(MOBILENET / "model.ckpt")
    assert result.missing_keys == [] and result.unexpected_keys == []
    with torch.no_grad():
        logits = model(inputs).numpy()
    np.testing.assert_allclose(logits, tf_logits, rtol=0, atol=1e-4)
    assert np.abs(before - tf_logits).max() > 1e-2  # the comparison is meaningful


def test_separable_conv2d_module_restores_a_mobilenet_layer_from_tensorflow():
    with np.load(MOBILENET / "expected.npz") as fixture:
        tf_inputs = torch.from_numpy(fixture["end_points/Conv2d_0"])
        tf_outputs = fixture["end_points/Conv2d_1_depthwise"]
    # slim's MobileNet depthwise layer: no pointwise stage, batch norm, relu6.
    layer = sc.nn.SeparableConv2d(None, 3, 1, activation_fn=torch.nn.functional.relu6,
                                  normalizer=sc.nn.BatchNorm(decay=0.9997, scale=True))
    result = layer.load_tf_checkpoint(MOBILENET / "model.ckpt", scope="MobilenetV1/Conv2d_1_depthwise")
    assert result == ([], [])
    assert layer.in_channels == 8 and layer.normalizer.num_features == 8
    with torch.no_grad():
        outputs = layer.eval()(tf_inputs).numpy()
    np.testing.assert_allclose(outputs, tf_outputs, rtol=0, atol=1e-4)


@pytest.mark.parametrize("activation_fn", [torch.relu, torch.tanh, None])
def test_eval_folds_batch_norm_into_the_pointwise_stage(fresh_graph, monkeypatch, activation_fn):
    x = torch.randn(2, 7, 7, 4, dtype=torch.float64)
    uniform = sc.random_uniform_initializer
    bn_init = {"moving_mean": uniform(-1.0, 1.0, seed=1), "moving_variance": uniform(0.5, 2.0, seed=2),
               "beta": uniform(-1.0, 1.0, seed=3), "gamma": uniform(-1.0, 1.0, seed=4)}
    expected = sc.separable_conv2d(x, 6, 3, 2, activation_fn=activation_fn, normalizer_fn=sc.batch_norm,
                                   normalizer_params={"is_training": False, "scale": True,
                                                      "param_initializers": bn_init})
    module = sc.nn.SeparableConv2d(6, 3, 2, activation_fn=activation_fn, in_channels=4,
                                   normalizer=sc.nn.BatchNorm(6, scale=True, dtype=torch.float64),
                                   dtype=torch.float64)
    module.load_state_dict({name.replace("BatchNorm/", "normalizer."): v.detach()
                            for name, v in _layer_variables(fresh_graph).items()})

    def batch_norm_must_not_run(*args, **kwargs):
        raise AssertionError("eval mode must fold batch norm into the pointwise stage")

    monkeypatch.setattr("sepconv._src.ops.batch_norm", batch_norm_must_not_run)
    torch.testing.assert_close(module.eval()(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("in_channels", [None, 4])
def test_eval_with_a_lazy_batch_norm_uses_its_initial_statistics(monkeypatch, in_channels):
    # As TF's is_training=False on fresh variables: moving mean 0, variance 1.
    x = torch.randn(2, 7, 7, 4, dtype=torch.float64)
    module = sc.nn.SeparableConv2d(6, 3, 2, in_channels=in_channels,
                                   normalizer=sc.nn.BatchNorm(dtype=torch.float64),
                                   dtype=torch.float64).eval()
    first = module(x)
    bn = module.normalizer
    assert bn.num_features == 6
    expected = torch.relu(reference.batch_norm_inference(
        reference.separable_conv2d(x, module.depthwise_weights, module.pointwise_weights),
        bn.moving_mean, bn.moving_variance, bn.beta, None, bn.epsilon))
    torch.testing.assert_close(first, expected, rtol=1e-12, atol=1e-12)

    def batch_norm_must_not_run(*args, **kwargs):
        raise AssertionError("with its statistics in place, batch norm must be folded")

    monkeypatch.setattr("sepconv._src.ops.batch_norm", batch_norm_must_not_run)
    torch.testing.assert_close(module(x), expected, rtol=1e-12, atol=1e-12)


def _eval_conv_with_statistics(normalizer):
    conv = sc.nn.SeparableConv2d(8, 3, 1, normalizer=normalizer, activation_fn=None, in_channels=3)
    with torch.no_grad():
        normalizer.moving_variance.fill_(1e-3)
    return conv.eval()


def test_eval_calls_a_normalizer_with_forward_hooks_instead_of_folding_it():
    x = torch.randn(2, 6, 6, 3)
    conv = _eval_conv_with_statistics(sc.nn.BatchNorm(8))
    calls = []
    conv.normalizer.register_forward_pre_hook(lambda module, args: calls.append("pre"))
    conv.normalizer.register_forward_hook(lambda module, args, out: out * 0)
    assert torch.count_nonzero(conv(x)) == 0 and calls == ["pre"]


def test_eval_calls_a_normalizer_when_a_global_forward_hook_is_registered():
    x = torch.randn(2, 6, 6, 3)
    conv = _eval_conv_with_statistics(sc.nn.BatchNorm(8))
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: seen.append(type(module).__name__))
    try:
        conv(x)
    finally:
        handle.remove()
    assert seen == ["BatchNorm", "SeparableConv2d"]


def test_eval_calls_a_batch_norm_subclass_with_its_own_forward():
    class ClampedBatchNorm(sc.nn.BatchNorm):
        def forward(self, inputs):
            return super().forward(inputs).clamp(-0.1, 0.1)

    x = torch.randn(2, 6, 6, 3)
    conv = _eval_conv_with_statistics(ClampedBatchNorm(8))
    assert conv(x).abs().max() <= 0.1


@pytest.mark.parametrize("make", [
    lambda: sc.nn.SeparableConv2d(8, 3, 1, in_channels=4),
    lambda: sc.nn.BatchNorm(4),
    lambda: sc.nn.SeparableConv2d(8, 3, 1, normalizer=sc.nn.BatchNorm(8), in_channels=4).eval(),
], ids=["SeparableConv2d", "BatchNorm", "folded-BatchNorm"])
def test_torch_compile_traces_an_initialised_module_in_one_graph(make):
    module = make()
    x = torch.randn(2, 6, 6, 4)
    torch._dynamo.reset()
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), module(x))


def _batch_norm_net(images, is_training=True):
    return sc.separable_conv2d(images, 8, 3, 1, normalizer_fn=sc.batch_norm,
                               normalizer_params={"is_training": is_training, "scale": True})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_template_converted_to_half_runs_batch_norm_in_float32(dtype):
    torch.manual_seed(0)
    x = torch.randn(4, 6, 6, 3)
    model = sc.nn.Template(_batch_norm_net).build(x)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.uniform_(0.5, 1.5)
    half = copy.deepcopy(model).to(dtype)
    # The float32 model with the converted values computes what TF's float32 variables would.
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.copy_(tensor.to(dtype))
    inputs = x.to(dtype)
    for mode in ("eval", "train"):
        expected = getattr(model, mode)()(inputs.float())
        outputs = getattr(half, mode)()(inputs)
        assert outputs.dtype == dtype
        torch.testing.assert_close(outputs.float(), expected, rtol=2e-2, atol=2e-2)
    # The moving statistics are updated in float32 and rounded once.
    for (name, updated), (_, reference_update) in zip(half.named_buffers(), model.named_buffers()):
        assert updated.dtype == dtype
        torch.testing.assert_close(updated, reference_update.to(dtype), rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_batch_norm_module_converted_to_half_updates_statistics_in_float32(dtype):
    torch.manual_seed(0)
    converted = sc.nn.BatchNorm(16, decay=0.9).to(dtype)
    wide = sc.nn.BatchNorm(16, decay=0.9)
    for _ in range(5):
        x = torch.randn(8, 3, 3, 16).to(dtype)
        converted(x), wide(x)
        with torch.no_grad():  # float32 statistics, rounded once per update
            for buffer in wide.buffers():
                buffer.copy_(buffer.to(dtype))
    for updated, expected in zip(converted.buffers(), wide.buffers()):
        torch.testing.assert_close(updated, expected.to(dtype), rtol=0, atol=0)


@pytest.mark.parametrize("make, channels", [
    (lambda: sc.nn.SeparableConv2d(5, 3, 1, in_channels=4, normalizer=sc.nn.BatchNorm(5, scale=True)), 4),
    (lambda: built_net(is_training=False), 3),
])
def test_modules_convert_and_load_by_swapping_tensors_after_inference_calls(make, channels):
    # torch.utils.swap_tensors refuses tensors with weak references, as the weight cache holds.
    x = torch.randn(2, 8, 8, channels)
    module = make().eval()
    state = {key: value.clone() for key, value in module.state_dict().items()}
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        with torch.no_grad():
            expected = module(x).double()
            module.double()
            torch.testing.assert_close(module(x.double()), expected, rtol=1e-5, atol=1e-5)
            module.float()
            module.load_state_dict({key: value.neg() for key, value in state.items()})
            module.load_state_dict(state)
            torch.testing.assert_close(module(x).double(), expected, rtol=0, atol=0)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)
