"""MobileNet v1 against slim's, restored from a TF checkpoint (fixture from tools/gen_mobilenet.py)."""
import inspect
import json
import pathlib

import numpy as np
import pytest
import torch

import sepconv as sc
from sepconv._src import train
from sepconv.models import (MOBILENETV1_CONV_DEFS, Conv, DepthSepConv, mobilenet_v1,
                            mobilenet_v1_025, mobilenet_v1_arg_scope, mobilenet_v1_base)

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "mobilenet_v1_025"
META = json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURE / "expected.npz") as z:
        return {k: z[k] for k in z.files}


def build(inputs, **kwargs):
    """slim's test network: 0.25 MobileNet, 10 classes, inference arg scope."""
    with sc.arg_scope(mobilenet_v1_arg_scope(is_training=False)):
        return mobilenet_v1(inputs, num_classes=META["num_classes"],
                            depth_multiplier=META["depth_multiplier"], is_training=False, **kwargs)


@pytest.fixture(scope="module")
def restored(expected):
    graph = sc.Graph()
    with graph.as_default():
        logits, end_points = build(torch.from_numpy(expected["input"]))
        train.Saver().restore(str(FIXTURE / "model.ckpt"))
        with torch.no_grad():
            logits, end_points = build(torch.from_numpy(expected["input"]), reuse=True)
    return graph, logits, end_points


def test_variables_equal_the_checkpoint_and_slim_order(restored):
    graph, _, _ = restored
    variables = graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES)
    assert [[v.op_name, list(v.shape)] for v in variables] == META["variables"]
    reader = train.load_checkpoint(str(FIXTURE / "model.ckpt"))
    assert {v.op_name: list(v.shape) for v in variables} == {
        name: list(shape) for name, shape in reader.get_variable_to_shape_map().items()}


def test_collections_match_slim(restored):
    graph, _, _ = restored
    trainable = graph.get_collection(sc.GraphKeys.TRAINABLE_VARIABLES)
    model = graph.get_collection(sc.GraphKeys.MODEL_VARIABLES)
    assert [v.op_name for v in trainable] == META["trainable_variables"]
    assert [v.op_name for v in model] == META["model_variables"]
    with graph.as_default():
        losses = sc.get_regularization_losses()
        assert len(losses) == META["regularization_losses"]
        total = sc.get_regularization_loss().detach().item()
    assert total == pytest.approx(META["regularization_total"], rel=1e-5)


def test_logits_match_tensorflow(restored, expected):
    _, logits, _ = restored
    assert logits.shape == tuple(META["logits_shape"])
    error = (logits - torch.from_numpy(expected["logits"])).abs().max().item()
    assert error < 1e-4, f"max |logits - TF| = {error}"


def test_end_points_match_slim(restored, expected):
    _, _, end_points = restored
    assert list(end_points) == META["end_points"]
    for name, shape in META["end_point_shapes"].items():
        assert list(end_points[name].shape) == shape, name
    for key in expected:
        if key.startswith("end_points/"):
            name = key.split("/", 1)[1]
            np.testing.assert_allclose(end_points[name].numpy(), expected[key], atol=1e-4,
                                       rtol=1e-4, err_msg=name)


def test_restore_changes_the_output():
    """The comparison above is meaningful: before restoring, the logits are different."""
    with np.load(FIXTURE / "expected.npz") as z:
        x, tf_logits = torch.from_numpy(z["input"]), z["logits"]
    torch.manual_seed(0)
    with sc.Graph().as_default():
        logits, _ = build(x)
    assert np.abs(logits.detach().numpy() - tf_logits).max() > 1e-2


def test_width_multiplier_and_min_depth():
    with sc.Graph().as_default():
        _, end_points = mobilenet_v1_base(torch.zeros(1, 32, 32, 3), "Conv2d_3_pointwise",
                                          depth_multiplier=0.1, min_depth=8)
    # depth(d) = max(int(d * 0.1), 8): 32 -> 8, 64 -> 8, 128 -> 12.
    assert [end_points[k].shape[-1] for k in ("Conv2d_0", "Conv2d_1_pointwise",
                                             "Conv2d_2_pointwise")] == [8, 8, 12]


def test_partial_variant_and_default_size():
    assert mobilenet_v1_025.keywords == {"depth_multiplier": 0.25}
    assert inspect.signature(mobilenet_v1_025).parameters["depth_multiplier"].default == 0.25
    assert mobilenet_v1.default_image_size == 224
    assert len(MOBILENETV1_CONV_DEFS) == 14
    assert isinstance(MOBILENETV1_CONV_DEFS[0], Conv)
    assert all(isinstance(d, DepthSepConv) for d in MOBILENETV1_CONV_DEFS[1:])


def test_small_input_reduces_the_pooling_kernel():
    with sc.Graph().as_default():
        logits, end_points = build(torch.zeros(1, 40, 40, 3))  # 2x2 before pooling
    assert end_points["AvgPool_1a"].shape == (1, 1, 1, 256)
    assert logits.shape == (1, 10)


def test_large_input_needs_global_pool_or_no_squeeze():
    x = torch.zeros(1, 288, 288, 3)  # 9x9 before pooling: 7x7 VALID, stride 2 leaves 2x2
    with sc.Graph().as_default():
        with pytest.raises(ValueError, match=r"Can not squeeze logits of shape \[1, 2, 2, 10\]"):
            build(x)
        assert sc.global_variables() == []  # all-or-nothing: a failed call creates nothing
    with sc.Graph().as_default():
        logits, end_points = build(x, global_pool=True)
        assert "global_pool" in end_points and "AvgPool_1a" not in end_points
        assert logits.shape == (1, 10)
    with sc.Graph().as_default():
        logits, _ = build(x, spatial_squeeze=False)
        assert logits.shape == (1, 2, 2, 10)


def test_no_classes_returns_pooled_features():
    with sc.Graph().as_default():
        with sc.arg_scope(mobilenet_v1_arg_scope(is_training=False)):
            net, end_points = mobilenet_v1(torch.zeros(1, 64, 64, 3), num_classes=0,
                                           depth_multiplier=0.25)
        assert net.shape == (1, 1, 1, 256)
        assert "Logits" not in end_points
        assert not any("Logits/Conv2d_1c_1x1" in v.name for v in sc.global_variables())


def test_final_endpoint_output_stride_and_explicit_padding():
    x = torch.randn(1, 64, 64, 3)
    with sc.Graph().as_default():
        net, end_points = mobilenet_v1_base(x, "Conv2d_13_pointwise", depth_multiplier=0.25,
                                            output_stride=8)
    assert net.shape == (1, 8, 8, 256)
    with sc.Graph().as_default():
        net, _ = mobilenet_v1_base(x, "Conv2d_2_depthwise", depth_multiplier=0.25,
                                   use_explicit_padding=True)
    assert net.shape == (1, 16, 16, 16)  # VALID on explicitly padded inputs keeps SAME's sizes


def test_base_argument_errors():
    x = torch.zeros(1, 32, 32, 3)
    with sc.Graph().as_default():
        with pytest.raises(ValueError, match=r"Invalid depth_multiplier 0: depth_multiplier is not"):
            mobilenet_v1_base(x, depth_multiplier=0)
        with pytest.raises(ValueError, match=r"Invalid output_stride 4: only allowed .*\[8, 16, 32\]"):
            mobilenet_v1_base(x, output_stride=4)
        with pytest.raises(ValueError, match=r"Unknown final endpoint 'Conv2d_99'"):
            mobilenet_v1_base(x, "Conv2d_99", conv_defs=MOBILENETV1_CONV_DEFS[:2])
        with pytest.raises(ValueError, match=r"Unknown final endpoint 'Conv2d_13_pointwize'"):
            mobilenet_v1_base(x, "Conv2d_13_pointwize", depth_multiplier=0.25)
        with pytest.raises(ValueError, match=r"Invalid conv_defs\[0\] 'bad': expected a Conv"):
            mobilenet_v1_base(x, conv_defs=["bad"], scope="other")
        with pytest.raises(ValueError, match=r"Invalid input tensor rank, expected 4, was: 3"):
            mobilenet_v1(torch.zeros(32, 32, 3))
        assert sc.global_variables() == [] and sc.get_collection(sc.GraphKeys.UPDATE_OPS) == []
        net, _ = mobilenet_v1_base(x, "Conv2d_1_pointwise", depth_multiplier=0.25)
        assert sc.global_variables()[0].name == "MobilenetV1/Conv2d_0/weights:0"


def test_training_mode_updates_batch_norm_statistics():
    torch.manual_seed(0)
    with sc.Graph().as_default():
        with sc.arg_scope(mobilenet_v1_arg_scope(is_training=True)):
            logits, _ = mobilenet_v1(torch.randn(2, 32, 32, 3), num_classes=3,
                                     depth_multiplier=0.25, dropout_keep_prob=0.5)
        mean = [v for v in sc.global_variables() if v.op_name.endswith("Conv2d_0/BatchNorm/moving_mean")][0]
        assert mean.abs().sum() > 0  # one step of the moving average from zero
        logits.sum().backward()
        weights = sc.get_default_graph().get_collection(sc.GraphKeys.TRAINABLE_VARIABLES)[0]
        assert weights.grad is not None and weights.grad.abs().sum() > 0


def test_reuse_shares_every_variable():
    with sc.Graph().as_default():
        build(torch.zeros(1, 32, 32, 3))
        count = len(sc.global_variables())
        build(torch.zeros(1, 32, 32, 3), reuse=True)
        assert len(sc.global_variables()) == count == 137


def restore_from_fixture(var_list=None):
    """Loads this graph's variables (a subset of the checkpoint's is fine) from the TF checkpoint."""
    train.Saver(var_list).restore(str(FIXTURE / "model.ckpt"))


@pytest.mark.parametrize("name", sorted(META["base_variants"]))
def test_base_options_match_tensorflow(name, expected):
    """output_stride (atrous) and use_explicit_padding, restored from the same checkpoint."""
    variant = META["base_variants"][name]
    x = torch.from_numpy(expected["input"])
    with sc.Graph().as_default():
        with sc.arg_scope(mobilenet_v1_arg_scope(is_training=False)):
            mobilenet_v1_base(x, depth_multiplier=0.25, **variant["kwargs"])
            restore_from_fixture()
            with torch.no_grad(), sc.variable_scope("MobilenetV1", reuse=True) as scope:
                net, end_points = mobilenet_v1_base(x, depth_multiplier=0.25, scope=scope,
                                                    **variant["kwargs"])
    assert list(end_points) == variant["end_points"]
    assert list(net.shape) == variant["net_shape"]
    for key in expected:
        if key.startswith(f"base_variants/{name}/"):
            point = key.rsplit("/", 1)[1]
            np.testing.assert_allclose(end_points[point].numpy(), expected[key], atol=1e-4,
                                       rtol=1e-4, err_msg=point)


def test_training_step_matches_tensorflow(expected):
    """Batch statistics in the forward pass, and the moving statistics after one update."""
    settings = META["train"]
    graph = sc.Graph()
    with graph.as_default():
        build(torch.zeros(1, 64, 64, 3))  # create, then restore the TF values
        restore_from_fixture()
        with sc.arg_scope(mobilenet_v1_arg_scope(is_training=True,
                                                 batch_norm_decay=settings["batch_norm_decay"])):
            logits, _ = mobilenet_v1(torch.from_numpy(expected["input"]), num_classes=10,
                                     depth_multiplier=0.25, is_training=True, reuse=True,
                                     dropout_keep_prob=settings["dropout_keep_prob"])
    np.testing.assert_allclose(logits.detach().numpy(), expected["train/logits"], atol=1e-4,
                               rtol=1e-4)
    variables = {v.op_name: v for v in graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES)}
    for name in settings["moving"]:
        np.testing.assert_allclose(variables[name].numpy(), expected["train/" + name], rtol=1e-4,
                                   atol=1e-5, err_msg=name)


def test_second_build_without_reuse_fails_and_changes_nothing():
    from graph_snapshot import snapshot
    graph = sc.Graph()
    with graph.as_default():
        build(torch.zeros(1, 32, 32, 3), prediction_fn=None)
        before = snapshot(graph)
        with pytest.raises(ValueError, match=r"Variable MobilenetV1/Conv2d_0/weights already exists"):
            build(torch.zeros(1, 32, 32, 3))
        assert snapshot(graph) == before


def test_prediction_fn_none_and_custom_scope():
    with sc.Graph().as_default():
        _, end_points = build(torch.zeros(1, 32, 32, 3), prediction_fn=None, scope="net")
        assert "Predictions" not in end_points
        assert sc.global_variables()[0].op_name == "net/Conv2d_0/weights"


def test_arg_scope_options():
    key = sc.arg_scope_func_key
    scope = mobilenet_v1_arg_scope(is_training=None, regularize_depthwise=True, stddev=0.5,
                                   batch_norm_decay=0.9, batch_norm_epsilon=0.01)
    assert "is_training" not in scope[key(sc.batch_norm)]
    assert scope[key(sc.batch_norm)]["decay"] == 0.9 and scope[key(sc.batch_norm)]["epsilon"] == 0.01
    with sc.Graph().as_default():
        with sc.arg_scope(scope):
            mobilenet_v1(torch.zeros(1, 32, 32, 3), num_classes=5, depth_multiplier=0.25)
        # 14 conv2d weights + 13 depthwise weights (regularize_depthwise) + the logits weights.
        assert len(sc.get_regularization_losses()) == 28
        weights = sc.global_variables()[0]
        assert 0.3 < weights.std().item() < 0.7  # truncated normal with stddev 0.5
