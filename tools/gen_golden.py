#!/usr/bin/env python
"""TensorFlow oracle: writes golden fixtures for ``tests/test_golden.py``.

Run with the TensorFlow virtual environment, never the project one::

    /work/venvs/tf/bin/python tools/gen_golden.py --seed 0 --count 170 \\
        --out tests/fixtures/golden_separable

It writes ``<out>.json`` (configurations, names, collections, statuses) and
``<out>.npz`` (input, variable values, output, cotangent, gradients, batch-norm
moving statistics after one run of ``UPDATE_OPS``).  Every configuration is a
random draw (seeded) of one or two ``tf_slim.layers.separable_conv2d`` calls
under an optional outer ``variable_scope``, built in a fresh ``tf.Graph``.

NPZ keys, with ``i`` the configuration index:

* ``{i}/input``                 the input (in the configuration's data_format)
* ``{i}/var/{name}``            value assigned to variable ``name`` (``...:0``)
* ``{i}/output``                output of the last call
* ``{i}/cotangent``             random array shaped like the output
* ``{i}/grad/input``            d sum(output * cotangent) / d input
* ``{i}/grad/{name}``           the same w.r.t. each trainable variable
* ``{i}/after/{name}``          BN moving statistics after one run of UPDATE_OPS

Notes on how TF is driven (recorded per configuration in the JSON):

* TF's CPU depthwise kernel refuses NCHW.  NCHW configurations are built with an
  NCHW placeholder that is transposed to NHWC inside the graph; the layers run
  in NHWC and the result is transposed back, so input, output and input
  gradient are all NCHW (``"tf_transposed": true``).  slim's separable_conv2d
  does *not* forward ``data_format`` to ``normalizer_fn``: ``batch_norm`` then
  sees an NCHW tensor with its own default ``data_format='NHWC'`` and
  normalises over the last axis (W).  The NHWC build reproduces this by
  transposing to NCHW around ``batch_norm`` only.  For every NCHW config the
  generator also builds (without running) the genuine NCHW graph and checks
  that variable names, shapes and all collections are identical.
* ``depthwise_conv2d`` refuses lower-case padding (the Keras-layer path used
  when ``num_outputs`` is not None accepts it).  Lower-case padding is recorded
  as given in ``kwargs``; TF receives the upper-case string
  (``"tf_padding_uppercased": true``).
* Unequal strides are refused by TF's CPU kernel; such draws are skipped and
  counted in ``skipped`` at the JSON top level.
"""
import argparse
import json
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras.src.legacy_tf_layers as _legacy_layers  # noqa: E402

sys.modules["tf_keras.legacy_tf_layers"] = _legacy_layers
import tf_slim  # noqa: E402

tf.compat.v1.disable_eager_execution()
tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)

v1 = tf.compat.v1
GK = v1.GraphKeys

ACTIVATIONS = {
    "relu": tf.nn.relu,
    "relu6": tf.nn.relu6,
    "none": None,
    "tanh": tf.tanh,
    "elu": tf.nn.elu,
    "sigmoid": tf.sigmoid,
}
USER_COLLECTIONS = ["my_vars", "w_coll", "b_coll"]
OUTPUT_COLLECTIONS = ["my_outputs"]


# ----------------------------------------------------------------------------
# Random drawing of configurations
# ----------------------------------------------------------------------------
def _pair(v):
    return [v, v] if isinstance(v, int) else list(v)


def _choice(rng, seq, p=None):
    return seq[rng.choice(len(seq), p=p)]


def _out_size(n, k, s, r, padding):
    eff = (k - 1) * r + 1
    if padding.upper() == "SAME":
        return -(-n // s)
    if n < eff:
        return None
    return -(-(n - eff + 1) // s)


def _call_output_shape(in_hw, kw):
    """Returns (H_out, W_out) of one call or None when VALID does not fit."""
    k = _pair(kw["kernel_size"])
    s = _pair(kw.get("stride", 1))
    r = _pair(kw.get("rate", 1))
    pad = kw.get("padding", "SAME")
    out = [_out_size(in_hw[d], k[d], s[d], r[d], pad) for d in range(2)]
    return None if None in out else out


def _draw_regularizer(rng):
    u = rng.random()
    if u < 0.45:
        return "omit"
    if u < 0.55:
        return None
    kind = _choice(rng, ["l1", "l2", "l1_l2"])
    scales = [0.0, 0.01, 0.1, 0.5, 1.5]
    probs = [0.08, 0.23, 0.23, 0.23, 0.23]
    if kind == "l1_l2":
        return {"type": "l1_l2", "scale_l1": float(_choice(rng, scales, probs)),
                "scale_l2": float(_choice(rng, scales, probs))}
    return {"type": kind, "scale": float(_choice(rng, scales, probs))}


def _draw_call(rng, in_c, allow_bn=True):
    """Draws the keyword arguments of one call (data_format added by caller)."""
    kw = {}
    kw["num_outputs"] = None if rng.random() < 0.3 else int(rng.integers(1, 6))
    if rng.random() < 0.55:
        kw["kernel_size"] = int(rng.integers(1, 4))
    else:
        kw["kernel_size"] = _choice(rng, [[1, 3], [3, 1], [3, 2], [2, 3], [2, 2], [1, 2], [3, 3]])
    kw["depth_multiplier"] = int(rng.integers(1, 4))
    u = rng.random()
    if u < 0.3:
        pass  # default stride
    else:
        s = _choice(rng, [1, 2, 3], [0.45, 0.43, 0.12])
        kw["stride"] = [s, s] if rng.random() < 0.3 else s
    u = rng.random()
    if u < 0.45:
        pass  # default rate
    else:
        kw["rate"] = _choice(rng, [1, 2, [1, 2], [2, 2], [2, 1], [1, 1]],
                             [0.2, 0.3, 0.2, 0.1, 0.1, 0.1])
    kw["padding"] = _choice(rng, ["omit", "SAME", "VALID", "same", "valid"],
                            [0.2, 0.3, 0.3, 0.1, 0.1])
    if kw["padding"] == "omit":
        del kw["padding"]
    act = _choice(rng, ["omit", "relu", "relu6", "none", "tanh", "elu", "sigmoid"])
    if act != "omit":
        kw["activation_fn"] = act
    if allow_bn and rng.random() < 0.3:
        kw["normalizer_fn"] = "batch_norm"
        params = {"is_training": bool(rng.random() < 0.5)}
        for key in ("scale", "center"):
            if rng.random() < 0.8:
                params[key] = bool(rng.random() < 0.5)
        if rng.random() < 0.6:
            params["decay"] = float(_choice(rng, [0.9, 0.5, 0.99]))
        if rng.random() < 0.6:
            params["epsilon"] = float(_choice(rng, [1e-3, 1e-2, 0.1]))
        if rng.random() < 0.1:
            params = None if rng.random() < 0.5 else {}
        kw["normalizer_params"] = params
    b = _choice(rng, ["omit", "zeros", "constant", None], [0.5, 0.1, 0.2, 0.2])
    if b == "zeros":
        kw["biases_initializer"] = {"type": "zeros"}
    elif b == "constant":
        kw["biases_initializer"] = {"type": "constant", "value": 0.3}
    elif b is None:
        kw["biases_initializer"] = None
    for key in ("weights_regularizer", "biases_regularizer"):
        reg = _draw_regularizer(rng)
        if reg != "omit":
            kw[key] = reg
    vc = _choice(rng, ["omit", None, "list", "dict", "dict_w"], [0.45, 0.1, 0.2, 0.15, 0.1])
    if vc == "list":
        kw["variables_collections"] = ["my_vars"]
    elif vc == "dict":
        kw["variables_collections"] = {"weights": ["w_coll"], "biases": ["b_coll"]}
    elif vc == "dict_w":
        kw["variables_collections"] = {"weights": ["w_coll", "my_vars"]}
    elif vc is None:
        kw["variables_collections"] = None
    oc = _choice(rng, ["omit", None, "list"], [0.5, 0.1, 0.4])
    if oc == "list":
        kw["outputs_collections"] = ["my_outputs"]
    elif oc is None:
        kw["outputs_collections"] = None
    u = rng.random()
    if u < 0.12:
        kw["trainable"] = False
    elif u < 0.3:
        kw["trainable"] = True
    return kw


def _is_invalid_rate_stride(kw):
    return max(_pair(kw.get("rate", 1))) > 1 and max(_pair(kw.get("stride", 1))) > 1


def draw_config(rng):
    """Returns a config description (before running TF)."""
    dtype = "float64" if rng.random() < 0.2 else "float32"
    data_format = "NCHW" if rng.random() < 0.35 else "NHWC"
    u = rng.random()
    outer = [] if u < 0.6 else (["outer"] if u < 0.9 else ["outer", "inner"])
    n_calls = 2 if rng.random() < 0.25 else 1
    u = rng.random()
    kind = "valid"
    if u < 0.05:
        kind = "rate_and_stride"
    elif u < 0.10:
        kind = "valid_too_small"
    elif u < 0.14:
        kind = "unequal_strides"
    n = int(rng.integers(1, 3))
    h = int(rng.integers(1, 10))
    w = int(rng.integers(1, 10))
    c = int(rng.integers(1, 5))
    calls = []
    hw = [h, w]
    in_c = c
    used_scopes = set()
    for ci in range(n_calls):
        last = ci == n_calls - 1
        for _attempt in range(200):
            kw = _draw_call(rng, in_c)
            if rng.random() < 0.35:
                name = _choice(rng, ["sep", "conv1", "block_a", "SeparableConv2d", "dw"])
                if name in used_scopes:
                    continue
                kw["scope"] = name
            elif rng.random() < 0.1:
                kw["scope"] = None
            if last and kind == "rate_and_stride":
                s = _choice(rng, [2, 3, [2, 2]], [0.6, 0.2, 0.2])
                kw["stride"] = s
                kw["rate"] = _choice(rng, [2, [1, 2], [2, 1], [2, 2]])
                kw["padding"] = "SAME"
            elif last and kind == "valid_too_small":
                kw["padding"] = _choice(rng, ["VALID", "valid"], [0.8, 0.2])
                if rng.random() < 0.5:
                    kw.pop("rate", None)
                    kw["kernel_size"] = [hw[0] + int(rng.integers(1, 3)), max(1, min(3, hw[1]))] \
                        if rng.random() < 0.5 else int(max(hw) + 1)
                else:
                    r = 2 + int(rng.integers(0, 2))
                    kw["rate"] = r
                    kw["kernel_size"] = max(2, (max(hw) + r - 1) // r + 1) \
                        if rng.random() < 0.5 else 3
                kw["stride"] = 1
                if _call_output_shape(hw, kw) is not None:
                    continue
            elif last and kind == "unequal_strides":
                kw["stride"] = _choice(rng, [[1, 2], [2, 1], [2, 3]])
                kw.pop("rate", None)
                if _call_output_shape(hw, kw) is None:
                    continue
            else:
                if _is_invalid_rate_stride(kw):
                    continue
                if _call_output_shape(hw, kw) is None:
                    continue
            break
        else:
            raise RuntimeError("could not draw a call")
        # An explicit "SeparableConv2d" after a default-named call would clash
        # (TF raises "already exists"); the reverse order is a valid case.
        used_scopes.add(kw.get("scope") or "SeparableConv2d")
        kw["data_format"] = data_format if (data_format == "NCHW" or rng.random() < 0.6) else "omit"
        if kw["data_format"] == "omit":
            del kw["data_format"]
        call = {"fn": "separable_convolution2d" if rng.random() < 0.15 else "separable_conv2d",
                "positional": bool(rng.random() < 0.2),
                "kwargs": kw}
        calls.append(call)
        out = _call_output_shape(hw, kw)
        if out is not None:
            hw = out
        in_c = kw["num_outputs"] if kw["num_outputs"] is not None else in_c * kw["depth_multiplier"]
    if data_format == "NHWC":
        shape = [n, h, w, c]
    else:
        shape = [n, c, h, w]
    return {"kind": kind, "dtype": dtype, "data_format": data_format,
            "outer_scopes": outer, "input_shape": shape, "calls": calls}


# ----------------------------------------------------------------------------
# Building in TF
# ----------------------------------------------------------------------------
def _tf_regularizer(spec):
    if spec is None:
        return None
    if spec["type"] == "l1":
        return tf_slim.l1_regularizer(spec["scale"])
    if spec["type"] == "l2":
        return tf_slim.l2_regularizer(spec["scale"])
    if spec["type"] == "l1_l2":
        return tf_slim.l1_l2_regularizer(spec["scale_l1"], spec["scale_l2"])
    raise ValueError(spec)


def _tf_kwargs(kw, nchw_numeric):
    """Turns JSON kwargs into TF kwargs.  Returns (kwargs, padding_uppercased)."""
    out = {}
    upper = False
    for key, val in kw.items():
        if key == "activation_fn":
            out[key] = ACTIVATIONS[val]
        elif key == "normalizer_fn":
            if nchw_numeric:
                def bn_on_nchw(x, **params):
                    # slim hands the NCHW tensor to batch_norm unchanged.
                    y = tf_slim.batch_norm(tf.transpose(x, [0, 3, 1, 2]), **params)
                    return tf.transpose(y, [0, 2, 3, 1])
                out[key] = bn_on_nchw
            else:
                out[key] = tf_slim.batch_norm
        elif key == "biases_initializer":
            if val is None:
                out[key] = None
            elif val["type"] == "zeros":
                out[key] = tf.compat.v1.zeros_initializer()
            else:
                out[key] = tf.compat.v1.constant_initializer(val["value"])
        elif key in ("weights_regularizer", "biases_regularizer"):
            out[key] = _tf_regularizer(val)
        elif key == "padding":
            if val != val.upper() and kw.get("num_outputs") is None:
                upper = True
                out[key] = val.upper()
            else:
                out[key] = val
        elif key == "data_format":
            out[key] = "NHWC" if nchw_numeric else val
        elif key in ("normalizer_params",):
            out[key] = None if val is None else dict(val)
        else:
            out[key] = val
    if nchw_numeric:
        out["data_format"] = "NHWC"
    return out, upper


def _apply_calls(x, cfg, nchw_numeric):
    """Applies the config's calls to x.  Returns (output, [padding flags])."""
    flags = []
    h = x
    for call in cfg["calls"]:
        kw, up = _tf_kwargs(call["kwargs"], nchw_numeric)
        flags.append(up)
        fn = getattr(tf_slim.layers, call["fn"])
        if call["positional"]:
            a = (kw.pop("num_outputs"), kw.pop("kernel_size"), kw.pop("depth_multiplier"))
            h = fn(h, *a, **kw)
        else:
            h = fn(h, **kw)
    return h, flags


def _enter_outer(cfg):
    import contextlib
    stack = contextlib.ExitStack()
    for name in cfg["outer_scopes"]:
        stack.enter_context(v1.variable_scope(name))
    return stack


def _structure(graph, cfg):
    with graph.as_default():
        names = lambda key: [v.name for v in v1.get_collection(key)]  # noqa: E731
        trainable = set(names(GK.TRAINABLE_VARIABLES))
        variables = [{"name": v.name, "shape": v.shape.as_list(),
                      "dtype": v.dtype.base_dtype.name,
                      "trainable": v.name in trainable}
                     for v in v1.global_variables()]
        user = {}
        for c in USER_COLLECTIONS:
            if graph.get_collection(c):
                user[c] = names(c)
        outs = {}
        for c in OUTPUT_COLLECTIONS:
            items = graph.get_collection(c)
            if items:
                outs[c] = [{"alias": list(getattr(t, "aliases", []))[-1]
                            if getattr(t, "aliases", None) else getattr(t, "alias", None),
                            "aliases": list(getattr(t, "aliases", []))} for t in items]
        return {
            "variables": variables,
            "collections": {"variables": names(GK.GLOBAL_VARIABLES),
                            "trainable_variables": names(GK.TRAINABLE_VARIABLES),
                            "model_variables": names(GK.MODEL_VARIABLES),
                            "user": user},
            "outputs_collections": outs,
            "n_regularization_losses": len(v1.get_collection(GK.REGULARIZATION_LOSSES)),
            "n_update_ops": len(v1.get_collection(GK.UPDATE_OPS)),
        }


def _bn_info(graph):
    """One entry per batch_norm: its scope and whether TF used FusedBatchNorm."""
    info = []
    for v in graph.get_collection(GK.GLOBAL_VARIABLES):
        if v.name.endswith("/moving_mean:0"):
            scope = v.name[: -len("/moving_mean:0")]
            fused = any(op.type.startswith("FusedBatchNorm") and "Grad" not in op.type
                        and op.name.startswith(scope + "/")
                        for op in graph.get_operations())
            info.append({"scope": scope, "fused": fused})
    return info


def _random_value(rng, name, shape, dtype):
    base = name.rsplit("/", 1)[-1].split(":")[0]
    if base == "moving_variance":
        v = rng.uniform(0.5, 2.0, shape)
    elif base == "moving_mean":
        v = rng.uniform(-0.5, 0.5, shape)
    elif base == "gamma":
        v = rng.uniform(0.5, 1.5, shape)
    elif base in ("beta", "biases"):
        v = rng.uniform(-0.5, 0.5, shape)
    else:
        v = rng.uniform(-1.0, 1.0, shape)
    return v.astype(dtype)


def _err(e):
    text = getattr(e, "message", None) or str(e)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if lines and lines[0].startswith("Graph execution error"):
        # Runtime errors: keep the kernel's message, not the Python traceback.
        lines = [ln for ln in lines if not ln.startswith(("File ", "Detected at", "Node:", "[[", "Graph"))]
    return {"type": type(e).__name__, "message": (lines[0] if lines else "")[:400]}


def run_config(cfg, rng, i, arrays):
    """Builds and runs one config in TF; fills `arrays`; returns the JSON record."""
    np_dtype = np.float64 if cfg["dtype"] == "float64" else np.float32
    tf_dtype = tf.float64 if cfg["dtype"] == "float64" else tf.float32
    nchw = cfg["data_format"] == "NCHW"
    rec = {"index": i, "kind": cfg["kind"], "dtype": cfg["dtype"],
           "data_format": cfg["data_format"], "tf_transposed": nchw,
           "input_shape": cfg["input_shape"], "outer_scopes": cfg["outer_scopes"],
           "calls": cfg["calls"]}
    x_val = rng.standard_normal(cfg["input_shape"]).astype(np_dtype)

    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf_dtype, cfg["input_shape"], name="input")
        xin = tf.transpose(x, [0, 2, 3, 1]) if nchw else x
        n_before = None
        with _enter_outer(cfg):
            try:
                if len(cfg["calls"]) > 1:
                    first = dict(cfg, calls=cfg["calls"][:-1])
                    h, flags0 = _apply_calls(xin, first, nchw)
                else:
                    h, flags0 = xin, []
                n_before = _structure(graph, cfg)
                last = dict(cfg, calls=cfg["calls"][-1:])
                y, flags1 = _apply_calls(h, last, nchw)
                flags = flags0 + flags1
            except Exception as e:  # noqa: BLE001
                if cfg["kind"] == "unequal_strides":
                    raise
                if n_before is None or cfg["kind"] == "valid":
                    raise RuntimeError(f"config {i}: valid config refused by TF: {e!r}\n{cfg}")
                rec["status"] = "error"
                rec["error"] = _err(e)
                rec["state_before_failure"] = n_before
                rec["tf_state_after_failure"] = _structure(graph, cfg)
                arrays[f"{i}/input"] = x_val
                return rec
        if nchw:
            y = tf.transpose(y, [0, 3, 1, 2])
        rec["tf_padding_uppercased"] = any(flags)
        rec.update(_structure(graph, cfg))
        if cfg["kind"] not in ("valid", "unequal_strides"):
            rec["state_before_failure"] = n_before
        rec["bn"] = _bn_info(graph)
        rec["output_shape"] = y.shape.as_list()
        cot_val = rng.standard_normal(rec["output_shape"]).astype(np_dtype)
        cot = tf.constant(cot_val)
        loss = tf.reduce_sum(y * cot)
        trainables = v1.trainable_variables()
        grads = tf.gradients(loss, [x] + trainables)
        reg = v1.get_collection(GK.REGULARIZATION_LOSSES)
        reg_total = tf.add_n(reg) if reg else None
        update_ops = v1.get_collection(GK.UPDATE_OPS)
        init = v1.global_variables_initializer()
        with v1.Session(graph=graph, config=v1.ConfigProto(
                intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)) as sess:
            sess.run(init)
            values = {}
            for v in v1.global_variables():
                val = _random_value(rng, v.name, v.shape.as_list(), np_dtype)
                v.load(val, sess)
                values[v.name] = val
            feed = {x: x_val}
            try:
                out_val, grad_vals = sess.run([y, grads], feed)
            except tf.errors.OpError as e:
                if cfg["kind"] == "unequal_strides":
                    raise
                raise RuntimeError(f"config {i}: TF run failed: {e!r}\n{cfg}")
            rec["regularization"] = {
                "count": len(reg),
                "total": float(sess.run(reg_total)) if reg_total is not None else 0.0}
            if update_ops:
                sess.run(update_ops, feed)
            after = {v.name: sess.run(v) for v in v1.global_variables()
                     if v.name.split("/")[-1].startswith("moving_")}
        rec["update_ops_run"] = len(update_ops)
    rec["status"] = "ok" if cfg["kind"] in ("valid", "unequal_strides") else "tf_accepts"
    arrays[f"{i}/input"] = x_val
    arrays[f"{i}/output"] = out_val
    if rec["status"] == "tf_accepts":
        return rec
    arrays[f"{i}/cotangent"] = cot_val
    for name, val in values.items():
        arrays[f"{i}/var/{name}"] = val
    arrays[f"{i}/grad/input"] = grad_vals[0]
    for v, gv in zip(trainables, grad_vals[1:]):
        if gv is None:
            raise RuntimeError(f"config {i}: no gradient for {v.name}")
        arrays[f"{i}/grad/{v.name}"] = gv
    for name, val in after.items():
        arrays[f"{i}/after/{name}"] = val
    if nchw:
        _check_nchw_structure(cfg, rec)
    return rec


def _check_nchw_structure(cfg, rec):
    """Builds the genuine NCHW graph (not run) and checks structure matches."""
    tf_dtype = tf.float64 if cfg["dtype"] == "float64" else tf.float32
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf_dtype, cfg["input_shape"])
        with _enter_outer(cfg):
            y, _ = _apply_calls(x, cfg, False)
        s = _structure(graph, cfg)
    for key in ("variables", "collections", "outputs_collections", "n_regularization_losses"):
        if s[key] != rec[key]:
            raise RuntimeError(f"NCHW structure mismatch in {key}: {s[key]} vs {rec[key]}")
    if y.shape.as_list() != rec["output_shape"]:
        raise RuntimeError(f"NCHW output shape mismatch: {y.shape} vs {rec['output_shape']}")


# ----------------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=170, help="configurations to record")
    p.add_argument("--out", default="tests/fixtures/golden_separable",
                   help="output path prefix (writes .npz and .json)")
    args = p.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    arrays = {}
    configs = []
    skipped = {"count": 0, "reason": "unequal strides (e.g. [1, 2]): TF's CPU "
               "depthwise kernel refuses them at run time", "errors": []}
    draws = 0
    while len(configs) < args.count:
        draws += 1
        cfg = draw_config(rng)
        if cfg["kind"] == "unequal_strides":
            try:
                sub = {}
                rec = run_config(cfg, rng, len(configs), sub)
            except Exception as e:  # noqa: BLE001
                skipped["count"] += 1
                msg = _err(e)
                if msg not in skipped["errors"]:
                    skipped["errors"].append(msg)
                continue
            arrays.update(sub)  # TF accepted unequal strides: keep it
            rec["kind"] = "valid"
            configs.append(rec)
            continue
        configs.append(run_config(cfg, rng, len(configs), arrays))
    counts = {}
    for c in configs:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    import tf_slim as _ts
    doc = {
        "tf_version": tf.__version__,
        "tf_keras_version": __import__("tf_keras").__version__,
        "tf_slim_version": getattr(_ts, "__version__", None) or _pkg_version("tf-slim"),
        "seed": args.seed,
        "count": len(configs),
        "draws": draws,
        "status_counts": counts,
        "skipped": skipped,
        "command": " ".join([os.path.basename(sys.executable), "tools/gen_golden.py"] + sys.argv[1:]),
        "notes": [
            "NCHW configs run in TF as NHWC with explicit transposes (tf_transposed); "
            "batch_norm as normalizer_fn receives the NCHW tensor with its default "
            "data_format NHWC, i.e. normalises over axis W (slim does not forward data_format).",
            "BN moving statistics: '{i}/after/...' is the value after one run of UPDATE_OPS; "
            "float32 BN uses TF's FusedBatchNorm (see per-config 'bn'), float64 the non-fused path.",
            "Lower-case padding is passed upper-case to TF when num_outputs is None "
            "(nn.depthwise_conv2d refuses it); see tf_padding_uppercased.",
            "status 'tf_accepts': TF silently computes an invalid configuration "
            "(rate > 1 with stride > 1); sepconv must raise ValueError.",
        ],
        "configs": configs,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.savez_compressed(args.out + ".npz", **arrays)
    with open(args.out + ".json", "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")
    print(f"wrote {args.out}.json/.npz: {len(configs)} configs {counts}, "
          f"skipped {skipped['count']} (unequal strides), {len(arrays)} arrays")


def _pkg_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001
        return None


if __name__ == "__main__":
    main()
