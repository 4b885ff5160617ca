"""ONNX export (torch.onnx.export, the dynamo-based exporter) of sepconv modules, run in ONNX Runtime."""
import warnings

import numpy as np
import pytest
import torch

import sepconv as sc

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # the dynamo-based exporter translates ops with onnxscript


def _export(model, example, path, dynamic_shapes=None):
    """Exports ``model`` to ``path`` with the dynamo-based exporter (the default in torch 2.13)."""
    with warnings.catch_warnings():
        # torch 2.13's exporter deep-copies pytree specs and so trips pytree's own
        # deprecation of `isinstance(treespec, LeafSpec)`: a torch-internal
        # FutureWarning, not about our model. Any other warning still fails the test.
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                category=FutureWarning)
        torch.onnx.export(model, (example,), str(path), dynamo=True, verbose=False,
                          dynamic_shapes=dynamic_shapes)
    onnx.checker.check_model(onnx.load(str(path)))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session, inputs):
    return session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]


def _expected(model, inputs):
    with torch.no_grad():
        return model(inputs).numpy()


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_separable_conv2d_module_exports_and_matches(tmp_path, data_format):
    torch.manual_seed(0)
    # Stride 2 on an even size: TF's asymmetric SAME padding (bottom/right only) must survive export.
    model = sc.nn.SeparableConv2d(6, 3, 2, stride=2, data_format=data_format,
                                  normalizer=sc.nn.BatchNorm(scale=True, data_format=data_format),
                                  activation_fn=torch.nn.functional.relu6)
    shape = (4, 10, 10, 3) if data_format == "NHWC" else (4, 3, 10, 10)
    model(torch.randn(shape) * 2 + 1)  # train mode: moving statistics away from 0 and 1
    model.eval()
    session = _export(model, torch.randn(shape), tmp_path / "sepconv.onnx")
    inputs = torch.randn(shape)
    np.testing.assert_allclose(_run(session, inputs), _expected(model, inputs), rtol=0, atol=1e-5)


def test_depthwise_only_module_with_dynamic_batch(tmp_path):
    torch.manual_seed(1)
    model = sc.nn.SeparableConv2d(None, [3, 2], 3, rate=2, padding="VALID", in_channels=2).eval()
    batch = torch.export.Dim("batch")
    session = _export(model, torch.randn(2, 9, 9, 2), tmp_path / "depthwise.onnx",
                      dynamic_shapes={"inputs": {0: batch}})
    inputs = torch.randn(5, 9, 9, 2)
    np.testing.assert_allclose(_run(session, inputs), _expected(model, inputs), rtol=0, atol=1e-5)


def test_the_legacy_exporter_keeps_tf_padding_of_sizes_the_stride_does_not_divide(tmp_path):
    # It writes floor division as truncation: the output size was once ceil(9 / 2) = 4.
    torch.manual_seed(3)
    model = sc.nn.SeparableConv2d(5, 3, 1, stride=2, in_channels=4).eval()
    inputs = torch.randn(2, 9, 8, 4)
    path = str(tmp_path / "legacy.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation, the trace's constant sizes
        torch.onnx.export(model, (inputs,), path, dynamo=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(_run(session, inputs), _expected(model, inputs), rtol=0, atol=1e-5)


def mobile_block(images, is_training=True):
    """A TF1-style function: arg_scope, variable scopes, functional batch norm."""
    with sc.variable_scope("Block"):
        with sc.arg_scope([sc.separable_conv2d], depth_multiplier=1, normalizer_fn=sc.batch_norm,
                          normalizer_params={"is_training": is_training, "scale": True}):
            net = sc.separable_conv2d(images, 16, 3, stride=2, scope="Conv2d_0")
            net = sc.separable_conv2d(net, 16, 3, scope="Conv2d_1")
        return sc.separable_conv2d(net, 4, 1, 1, activation_fn=None, scope="Logits")


def test_template_exports_and_matches(tmp_path):
    torch.manual_seed(2)
    model = sc.nn.Template(mobile_block)
    model(torch.randn(8, 12, 12, 3))  # creates the variables and moves the moving statistics
    model.eval()
    session = _export(model, torch.randn(2, 12, 12, 3), tmp_path / "template.onnx")
    inputs = torch.randn(2, 12, 12, 3)
    np.testing.assert_allclose(_run(session, inputs), _expected(model, inputs), rtol=0, atol=1e-5)
    # Export reads the module's current tensors (not a stale copy, nor a weight cache).
    with torch.no_grad():
        model.get_parameter("Block/Logits/biases").add_(1.0)
    updated = _export(model, torch.randn(2, 12, 12, 3), tmp_path / "updated.onnx")
    np.testing.assert_allclose(_run(updated, inputs), _run(session, inputs) + 1.0, rtol=0, atol=1e-5)


def test_mobilenet_template_restored_from_tf_exports_with_tf_numbers(tmp_path):
    from test_nn import MOBILENET, mobilenet_logits
    with np.load(MOBILENET / "expected.npz") as fixture:
        inputs, tf_logits = torch.from_numpy(fixture["input"]), fixture["logits"]
    model = sc.nn.Template(mobilenet_logits).build(inputs)
    model.load_tf_checkpoint(MOBILENET / "model.ckpt")
    model.eval()
    session = _export(model, inputs, tmp_path / "mobilenet.onnx")
    onnx_logits = _run(session, inputs)
    np.testing.assert_allclose(onnx_logits, _expected(model, inputs), rtol=0, atol=1e-5)
    np.testing.assert_allclose(onnx_logits, tf_logits, rtol=0, atol=1e-4)
