"""The small TF1-style model that tests/test_nn.py and tests/ddp_worker.py wrap in sc.nn.Template."""
import torch

import sepconv as sc


def net(images, is_training=True, num_classes=3):
    """A small TF1-style model: arg_scope, scopes, batch norm and a separable head."""
    with sc.variable_scope("Net"):
        with sc.arg_scope([sc.separable_conv2d], depth_multiplier=1, normalizer_fn=sc.batch_norm,
                          normalizer_params={"is_training": is_training, "scale": True, "decay": 0.5}):
            x = sc.separable_conv2d(images, 8, 3, stride=2, scope="Conv_0")
            x = sc.separable_conv2d(x, 8, 3, outputs_collections=["end_points"])
        return sc.separable_conv2d(x, num_classes, 1, 1, activation_fn=None, scope="Logits")


NET_PARAMETERS = [
    "Net/Conv_0/depthwise_weights", "Net/Conv_0/pointwise_weights", "Net/Conv_0/BatchNorm/gamma",
    "Net/Conv_0/BatchNorm/beta", "Net/SeparableConv2d/depthwise_weights",
    "Net/SeparableConv2d/pointwise_weights", "Net/SeparableConv2d/BatchNorm/gamma",
    "Net/SeparableConv2d/BatchNorm/beta", "Net/Logits/depthwise_weights",
    "Net/Logits/pointwise_weights", "Net/Logits/biases"]
NET_BUFFERS = [f"Net/{layer}/BatchNorm/{name}" for layer in ("Conv_0", "SeparableConv2d")
               for name in ("moving_mean", "moving_variance")]


def built_net(**kwargs):
    """The Template with its variables created (seeded), before any training."""
    torch.manual_seed(0)
    return sc.nn.Template(net, **kwargs).build(torch.zeros(1, 8, 8, 3))


def global_batch():
    """The fixed batch that the DDP test splits across ranks."""
    return torch.randn(4, 8, 8, 3, generator=torch.Generator().manual_seed(1))
