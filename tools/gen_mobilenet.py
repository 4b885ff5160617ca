"""TensorFlow oracle for MobileNet v1 and slim's conv2d / pooling / softmax.

Run with the TensorFlow venv (TF is never imported by the project or its tests):

    /work/venvs/tf/bin/python tools/gen_mobilenet.py [--seed 0] [--out tests/fixtures/mobilenet_v1_025]

tf-slim's pip package does not ship ``nets/mobilenet_v1.py``, so slim's
definition is restated below (``tf_mobilenet_v1``), layer for layer from
tensorflow/models ``research/slim/nets/mobilenet_v1.py`` (the tf_slim-based
version with ``global_pool`` and ``use_explicit_padding``), built with
``tf_slim`` layers in graph mode.

Writes into ``--out``:

* ``model.ckpt.{index,data-00000-of-00001}`` and ``checkpoint``: a
  ``tf.compat.v1.train.Saver`` checkpoint of ``mobilenet_v1`` with depth
  multiplier 0.25, ``num_classes=10``, built under
  ``mobilenet_v1_arg_scope(is_training=False)`` and with ``is_training=False``,
  whose variables (weights, biases, BN beta/gamma/moving statistics; moving
  variances positive) are random, not their initial values.
* ``expected.npz``: ``input`` (2x64x64x3: every stride-2 SAME layer sees an
  even size, so TF pads the bottom/right only), ``logits``, the end points
  ``end_points/<name>`` listed in ``expected.json``, and the companion cases
  ``companions/<case>/{input,weights,biases,output}``.
* ``base_variants/<name>/<end point>`` (``mobilenet_v1_base`` with
  ``output_stride`` and ``use_explicit_padding``) and ``train/...`` (one
  training-mode step, batch-norm decay 0.5, keep_prob 1: logits and moving
  statistics after ``UPDATE_OPS``), both from the same checkpoint.
* ``expected.json``: global variables (name, shape) in creation order, the
  trainable, model-variable and regularization-loss collections, all end
  point names in order, the regularization total, and for each companion
  case its arguments, variable names and outputs-collection aliases.
"""
import argparse
import collections
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "mobilenet_v1_025")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tf_keras.src.legacy_tf_layers as _legacy  # noqa: E402  (tf-slim imports the old path)

sys.modules.setdefault("tf_keras.legacy_tf_layers", _legacy)
import tensorflow as tf  # noqa: E402
import tf_slim as slim  # noqa: E402

tf.compat.v1.disable_eager_execution()
tf1 = tf.compat.v1

# ---------------------------------------------------------------------------
# slim's MobileNet v1, restated (tf_slim does not ship it)
# ---------------------------------------------------------------------------
Conv = collections.namedtuple("Conv", ["kernel", "stride", "depth"])
DepthSepConv = collections.namedtuple("DepthSepConv", ["kernel", "stride", "depth"])
CONV_DEFS = [Conv([3, 3], 2, 32)] + [
    DepthSepConv([3, 3], stride, depth)
    for stride, depth in [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512)]
    + [(1, 512)] * 5 + [(2, 1024), (1, 1024)]]


def _tf_fixed_padding(inputs, kernel_size, rate=1):
    effective = kernel_size[0] + (kernel_size[0] - 1) * (rate - 1)
    before = (effective - 1) // 2
    after = effective - 1 - before
    return tf.pad(inputs, [[0, 0], [before, after], [before, after], [0, 0]])


def tf_mobilenet_v1_base(inputs, final_endpoint="Conv2d_13_pointwise", min_depth=8,
                         depth_multiplier=1.0, output_stride=None, use_explicit_padding=False,
                         scope=None):
    def depth(d):
        return max(int(d * depth_multiplier), min_depth)

    end_points = {}
    padding = "VALID" if use_explicit_padding else "SAME"
    with tf1.variable_scope(scope, "MobilenetV1", [inputs]):
        with slim.arg_scope([slim.conv2d, slim.separable_conv2d], padding=padding):
            current_stride, rate = 1, 1
            net = inputs
            for i, conv_def in enumerate(CONV_DEFS):
                base = "Conv2d_%d" % i
                if output_stride is not None and current_stride == output_stride:
                    layer_stride, layer_rate = 1, rate
                    rate *= conv_def.stride
                else:
                    layer_stride, layer_rate = conv_def.stride, 1
                    current_stride *= conv_def.stride
                if isinstance(conv_def, Conv):
                    if use_explicit_padding:
                        net = _tf_fixed_padding(net, conv_def.kernel)
                    net = slim.conv2d(net, depth(conv_def.depth), conv_def.kernel,
                                      stride=conv_def.stride, scope=base)
                    end_points[base] = net
                    if base == final_endpoint:
                        return net, end_points
                    continue
                if use_explicit_padding:
                    net = _tf_fixed_padding(net, conv_def.kernel, layer_rate)
                net = slim.separable_conv2d(net, None, conv_def.kernel, depth_multiplier=1,
                                            stride=layer_stride, rate=layer_rate,
                                            scope=base + "_depthwise")
                end_points[base + "_depthwise"] = net
                if base + "_depthwise" == final_endpoint:
                    return net, end_points
                net = slim.conv2d(net, depth(conv_def.depth), [1, 1], stride=1,
                                  scope=base + "_pointwise")
                end_points[base + "_pointwise"] = net
                if base + "_pointwise" == final_endpoint:
                    return net, end_points
    return net, end_points


def tf_mobilenet_v1(inputs, num_classes, depth_multiplier, is_training, dropout_keep_prob=0.999):
    with tf1.variable_scope(None, "MobilenetV1", [inputs]) as scope:
        with slim.arg_scope([slim.batch_norm, slim.dropout], is_training=is_training):
            net, end_points = tf_mobilenet_v1_base(inputs, scope=scope,
                                                   depth_multiplier=depth_multiplier)
            with tf1.variable_scope("Logits"):
                shape = net.get_shape().as_list()
                kernel_size = [min(shape[1], 7), min(shape[2], 7)]
                net = slim.avg_pool2d(net, kernel_size, padding="VALID", scope="AvgPool_1a")
                end_points["AvgPool_1a"] = net
                net = slim.dropout(net, keep_prob=dropout_keep_prob, scope="Dropout_1b")
                logits = slim.conv2d(net, num_classes, [1, 1], activation_fn=None,
                                     normalizer_fn=None, scope="Conv2d_1c_1x1")
                logits = tf.squeeze(logits, [1, 2], name="SpatialSqueeze")
            end_points["Logits"] = logits
            end_points["Predictions"] = slim.softmax(logits, scope="Predictions")
    return logits, end_points


def tf_mobilenet_v1_arg_scope(is_training=True, weight_decay=0.00004, stddev=0.09,
                              batch_norm_decay=0.9997, batch_norm_epsilon=0.001):
    batch_norm_params = {"center": True, "scale": True, "decay": batch_norm_decay,
                         "epsilon": batch_norm_epsilon,
                         "updates_collections": tf1.GraphKeys.UPDATE_OPS,
                         "is_training": is_training}
    regularizer = slim.l2_regularizer(weight_decay)
    with slim.arg_scope([slim.conv2d, slim.separable_conv2d],
                        weights_initializer=tf1.truncated_normal_initializer(stddev=stddev),
                        activation_fn=tf.nn.relu6, normalizer_fn=slim.batch_norm):
        with slim.arg_scope([slim.batch_norm], **batch_norm_params):
            with slim.arg_scope([slim.conv2d], weights_regularizer=regularizer):
                with slim.arg_scope([slim.separable_conv2d], weights_regularizer=None) as sc:
                    return sc


# ---------------------------------------------------------------------------
# Random, non-trivial variable values
# ---------------------------------------------------------------------------
def random_value(rng, name, shape):
    leaf = name.split("/")[-1]
    if leaf == "moving_variance":
        return rng.uniform(0.5, 2.0, shape)
    if leaf == "gamma":
        return rng.uniform(0.5, 1.5, shape)
    if leaf in ("beta", "moving_mean", "biases"):
        return rng.normal(0.0, 0.2, shape)
    fan_in = int(np.prod(shape[:-1])) if leaf != "depthwise_weights" else shape[0] * shape[1]
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)


def randomize(sess, rng):
    for var in tf1.global_variables():
        shape = var.get_shape().as_list()
        var.load(random_value(rng, var.op.name, shape).astype(np.float32), sess)


# ---------------------------------------------------------------------------
# The network fixture
# ---------------------------------------------------------------------------
END_POINTS_SAVED = ("Conv2d_0", "Conv2d_1_depthwise", "Conv2d_1_pointwise",
                    "Conv2d_6_depthwise", "Conv2d_13_pointwise", "AvgPool_1a", "Predictions")


def build_network_fixture(rng, out_dir, arrays, meta):
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf1.placeholder(tf.float32, [2, 64, 64, 3])
        with slim.arg_scope(tf_mobilenet_v1_arg_scope(is_training=False)):
            logits, end_points = tf_mobilenet_v1(inputs, num_classes=10, depth_multiplier=0.25,
                                                 is_training=False)
        reg_losses = tf1.get_collection(tf1.GraphKeys.REGULARIZATION_LOSSES)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            randomize(sess, rng)
            x = rng.uniform(-1.0, 1.0, (2, 64, 64, 3)).astype(np.float32)
            fetched = sess.run({"logits": logits, "end_points": end_points,
                                "reg": tf.add_n(reg_losses)}, {inputs: x})
            tf1.train.Saver().save(sess, os.path.join(out_dir, "model.ckpt"), write_meta_graph=False)
        arrays["input"] = x
        arrays["logits"] = fetched["logits"]
        for name in END_POINTS_SAVED:
            arrays["end_points/" + name] = fetched["end_points"][name]
        meta["variables"] = [[v.op.name, v.get_shape().as_list()] for v in tf1.global_variables()]
        meta["trainable_variables"] = [v.op.name for v in tf1.trainable_variables()]
        meta["model_variables"] = [v.op.name for v in tf1.model_variables()]
        meta["regularization_losses"] = len(reg_losses)
        meta["regularization_total"] = float(fetched["reg"])
        meta["end_points"] = list(end_points)
        meta["end_point_shapes"] = {k: v.get_shape().as_list() for k, v in end_points.items()}
        meta["logits_shape"] = list(fetched["logits"].shape)


# ---------------------------------------------------------------------------
# Variants restored from the same checkpoint: base options and one training step
# ---------------------------------------------------------------------------
BASE_VARIANTS = {
    # name: (mobilenet_v1_base keyword arguments, end points saved)
    "os8_explicit": (dict(output_stride=8, use_explicit_padding=True),
                     ("Conv2d_0", "Conv2d_7_depthwise", "Conv2d_13_pointwise")),
    "os16": (dict(output_stride=16), ("Conv2d_13_pointwise",)),
    "explicit_to_5": (dict(use_explicit_padding=True, final_endpoint="Conv2d_5_depthwise"),
                      ("Conv2d_5_depthwise",)),
}
TRAIN_DECAY = 0.5  # a visible moving-average step
TRAIN_MOVING = ("MobilenetV1/Conv2d_0/BatchNorm/moving_mean",
                "MobilenetV1/Conv2d_0/BatchNorm/moving_variance",
                "MobilenetV1/Conv2d_13_pointwise/BatchNorm/moving_mean",
                "MobilenetV1/Conv2d_13_pointwise/BatchNorm/moving_variance")


def build_variants(out_dir, arrays, meta):
    prefix = os.path.join(out_dir, "model.ckpt")
    x = arrays["input"]
    meta["base_variants"] = {}
    for name, (kwargs, saved) in BASE_VARIANTS.items():
        with tf.Graph().as_default():
            inputs = tf.constant(x)
            with slim.arg_scope(tf_mobilenet_v1_arg_scope(is_training=False)):
                net, end_points = tf_mobilenet_v1_base(inputs, depth_multiplier=0.25, **kwargs)
            with tf1.Session() as sess:
                tf1.train.Saver().restore(sess, prefix)
                values = sess.run({k: end_points[k] for k in saved})
            for key, value in values.items():
                arrays[f"base_variants/{name}/{key}"] = value
            meta["base_variants"][name] = {"kwargs": kwargs, "end_points": list(end_points),
                                           "net_shape": net.get_shape().as_list()}
    with tf.Graph().as_default():
        inputs = tf.constant(x)
        with slim.arg_scope(tf_mobilenet_v1_arg_scope(is_training=True,
                                                      batch_norm_decay=TRAIN_DECAY)):
            logits, _ = tf_mobilenet_v1(inputs, num_classes=10, depth_multiplier=0.25,
                                        is_training=True, dropout_keep_prob=1.0)
        update_ops = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)
        moving = {v.op.name: v for v in tf1.global_variables() if v.op.name in TRAIN_MOVING}
        with tf1.Session() as sess:
            tf1.train.Saver().restore(sess, prefix)
            arrays["train/logits"] = sess.run([logits, update_ops])[0]
            for key, value in sess.run(moving).items():
                arrays["train/" + key] = value
        meta["train"] = {"batch_norm_decay": TRAIN_DECAY, "dropout_keep_prob": 1.0,
                         "update_ops": len(update_ops), "moving": list(TRAIN_MOVING)}


# ---------------------------------------------------------------------------
# Companion layers: conv2d, avg_pool2d, max_pool2d, softmax
# ---------------------------------------------------------------------------
CONV_CASES = [
    # name, input shape (NHWC), num_outputs, kernel, stride, rate, padding
    ("conv_same_s2_even", [2, 8, 6, 3], 4, [3, 3], 2, 1, "SAME"),
    ("conv_same_s2_odd", [1, 7, 9, 2], 3, [3, 3], 2, 1, "SAME"),
    ("conv_same_k4_s3", [1, 10, 11, 2], 5, [4, 2], [3, 2], 1, "SAME"),
    ("conv_same_rate2", [1, 9, 8, 3], 2, [3, 3], 1, 2, "SAME"),
    ("conv_valid_s2", [2, 9, 8, 3], 4, [3, 2], 2, 1, "VALID"),
    ("conv_1x1", [2, 5, 5, 6], 7, [1, 1], 1, 1, "SAME"),
    ("conv_1x1_s2", [1, 6, 5, 4], 3, [1, 1], 2, 1, "SAME"),
]
POOL_CASES = [
    # name, op, input shape (NHWC), kernel, stride, padding
    ("avg_same_k3_s2_even", "avg", [2, 6, 8, 3], [3, 3], 2, "SAME"),
    ("avg_same_k2_s2_odd", "avg", [1, 5, 7, 2], [2, 2], 2, "SAME"),
    ("avg_same_k3_s1", "avg", [1, 5, 4, 2], [3, 3], 1, "SAME"),
    ("avg_same_k4_s3", "avg", [1, 7, 10, 2], [4, 3], [3, 2], "SAME"),
    ("avg_valid_k2_s2", "avg", [2, 7, 6, 3], [2, 2], 2, "VALID"),
    ("max_same_k3_s2_even", "max", [2, 6, 8, 3], [3, 3], 2, "SAME"),
    ("max_valid_k3_s2", "max", [1, 7, 7, 2], [3, 3], 2, "VALID"),
]


def build_companions(rng, arrays, meta):
    cases = meta["companions"] = {}
    for name, shape, num_outputs, kernel, stride, rate, padding in CONV_CASES:
        graph = tf.Graph()
        with graph.as_default():
            x = rng.normal(0.0, 1.0, shape).astype(np.float32)
            with tf1.variable_scope("net"):
                y = slim.conv2d(tf.constant(x), num_outputs, kernel, stride=stride, rate=rate,
                                padding=padding, outputs_collections=["outs"])
            with tf1.Session() as sess:
                sess.run(tf1.global_variables_initializer())
                randomize(sess, rng)
                arrays[f"companions/{name}/input"] = x
                arrays[f"companions/{name}/output"] = sess.run(y)
                for var in tf1.global_variables():
                    arrays[f"companions/{name}/{var.op.name.split('/')[-1]}"] = sess.run(var)
            cases[name] = {"op": "conv2d", "num_outputs": num_outputs, "kernel_size": kernel,
                           "stride": stride, "rate": rate, "padding": padding,
                           "variables": [v.op.name for v in tf1.global_variables()],
                           "aliases": [t.aliases for t in tf1.get_collection("outs")]}
    for name, op, shape, kernel, stride, padding in POOL_CASES:
        graph = tf.Graph()
        with graph.as_default():
            x = rng.normal(0.0, 1.0, shape).astype(np.float32)
            pool = slim.avg_pool2d if op == "avg" else slim.max_pool2d
            with tf1.variable_scope("net"):
                y = pool(tf.constant(x), kernel, stride=stride, padding=padding,
                         outputs_collections=["outs"])
                pool(tf.constant(x), kernel, stride=stride, padding=padding,
                     outputs_collections=["outs"])  # a second one: the default name made unique
            with tf1.Session() as sess:
                arrays[f"companions/{name}/input"] = x
                arrays[f"companions/{name}/output"] = sess.run(y)
            cases[name] = {"op": op + "_pool2d", "kernel_size": kernel, "stride": stride,
                           "padding": padding,
                           "aliases": [t.aliases for t in tf1.get_collection("outs")]}
    graph = tf.Graph()
    with graph.as_default():
        x = rng.normal(0.0, 3.0, [2, 3, 5]).astype(np.float32)
        y = slim.softmax(tf.constant(x))
        with tf1.Session() as sess:
            arrays["companions/softmax/input"] = x
            arrays["companions/softmax/output"] = sess.run(y)
        cases["softmax"] = {"op": "softmax", "variables": []}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    arrays, meta = {}, {"seed": args.seed, "tensorflow": tf.__version__,
                        "depth_multiplier": 0.25, "num_classes": 10}
    build_network_fixture(rng, args.out, arrays, meta)
    build_variants(args.out, arrays, meta)
    build_companions(rng, arrays, meta)
    np.savez_compressed(os.path.join(args.out, "expected.npz"), **arrays)
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(meta, f, indent=1)
    # TF writes an absolute path into ``checkpoint``; keep the fixture relocatable.
    with open(os.path.join(args.out, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n')
    print(f"wrote {args.out}: {len(meta['variables'])} variables, logits {meta['logits_shape']}")


if __name__ == "__main__":
    main()
