"""Argument validation matrix: every bad argument gets a clear error and changes nothing.

Each case names a call with one bad argument, the exception class, and the
message fragments that must appear in order: the argument, the bad value and
what is allowed. The layer, ``get_variable`` and ``variable_scope`` cases run
in a graph that already holds a layer, and must leave its variables (values
included), collections and scope counters exactly as they were; the next
default-named layer still gets the unsuffixed name.

Also here: a zero-size batch works as in TF (checked against TF 2.21 / tf-slim:
output ``(0, H', W', C')``, batch-norm moving statistics become NaN), and
NaN/Inf inputs propagate as the float64 reference says instead of raising.
"""
import re

import numpy as np
import pytest
import torch

import reference
import sepconv as sc
from graph_snapshot import snapshot


def m(*parts):
    """A regex matching the literal ``parts`` in order."""
    return ".*".join(re.escape(part) for part in parts)


def x(shape=(1, 5, 5, 3), dtype=torch.float32):
    return torch.ones(shape, dtype=dtype)


# (id, keyword overrides of separable_conv2d(x(), 4, 3, 1), error, match)
SEPARABLE_CASES = [
    ("kernel-bool", dict(kernel_size=True), TypeError, m("Invalid kernel_size True", "expected an int >= 1")),
    ("kernel-zero", dict(kernel_size=0), ValueError, m("Invalid kernel_size 0", "expected an int >= 1")),
    ("kernel-negative", dict(kernel_size=[-1, 3]), ValueError, m("Invalid kernel_size -1", "int >= 1")),
    ("kernel-float", dict(kernel_size=3.0), TypeError, m("Invalid kernel_size 3.0", "int >= 1")),
    ("kernel-float-in-pair", dict(kernel_size=[3, 2.5]), TypeError, m("Invalid kernel_size 2.5", "int >= 1")),
    ("kernel-bool-in-pair", dict(kernel_size=[3, True]), TypeError, m("Invalid kernel_size True", "int >= 1")),
    ("kernel-len3", dict(kernel_size=[3, 3, 3]), ValueError,
     m("Invalid kernel_size [3, 3, 3]", "list of length 2, got length 3")),
    ("kernel-len1", dict(kernel_size=[3]), ValueError, m("Invalid kernel_size [3]", "length 2, got length 1")),
    ("kernel-str", dict(kernel_size="3"), TypeError, m("Invalid kernel_size '3'", "int >= 1")),
    ("kernel-none", dict(kernel_size=None), TypeError, m("Invalid kernel_size None", "int >= 1")),
    ("num-outputs-zero", dict(num_outputs=0), ValueError, m("Invalid num_outputs 0", "int >= 1")),
    ("num-outputs-negative", dict(num_outputs=-2), ValueError, m("Invalid num_outputs -2", "int >= 1")),
    ("num-outputs-bool", dict(num_outputs=True), TypeError, m("Invalid num_outputs True", "int >= 1")),
    ("num-outputs-float", dict(num_outputs=2.0), TypeError, m("Invalid num_outputs 2.0", "int >= 1")),
    ("num-outputs-str", dict(num_outputs="4"), TypeError, m("Invalid num_outputs '4'", "int >= 1")),
    ("multiplier-zero", dict(depth_multiplier=0), ValueError, m("Invalid depth_multiplier 0", "int >= 1")),
    ("multiplier-negative", dict(depth_multiplier=-1), ValueError, m("Invalid depth_multiplier -1", "int >= 1")),
    ("multiplier-none", dict(depth_multiplier=None), TypeError, m("Invalid depth_multiplier None", "int >= 1")),
    ("multiplier-float", dict(depth_multiplier=1.5), TypeError, m("Invalid depth_multiplier 1.5", "int >= 1")),
    ("multiplier-bool", dict(depth_multiplier=False), TypeError, m("Invalid depth_multiplier False", "int >= 1")),
    ("stride-zero", dict(stride=0), ValueError, m("Invalid stride 0", "int >= 1")),
    ("stride-negative", dict(stride=-1), ValueError, m("Invalid stride -1", "int >= 1")),
    ("stride-zero-in-pair", dict(stride=(2, 0)), ValueError, m("Invalid stride 0", "int >= 1")),
    ("stride-len1", dict(stride=(1,)), ValueError, m("Invalid stride (1,)", "length 2, got length 1")),
    ("stride-len3", dict(stride=(1, 1, 1)), ValueError, m("Invalid stride (1, 1, 1)", "length 2, got length 3")),
    ("stride-float", dict(stride=1.0), TypeError, m("Invalid stride 1.0", "int >= 1")),
    ("stride-bool", dict(stride=True), TypeError, m("Invalid stride True", "int >= 1")),
    ("rate-zero", dict(rate=0), ValueError, m("Invalid rate 0", "int >= 1")),
    ("rate-negative", dict(rate=-1), ValueError, m("Invalid rate -1", "int >= 1")),
    ("rate-zero-in-pair", dict(rate=[1, 0]), ValueError, m("Invalid rate 0", "int >= 1")),
    ("rate-len1", dict(rate=(1,)), ValueError, m("Invalid rate (1,)", "length 2, got length 1")),
    ("rate-float", dict(rate=1.0), TypeError, m("Invalid rate 1.0", "int >= 1")),
    ("rate-bool", dict(rate=True), TypeError, m("Invalid rate True", "int >= 1")),
    ("rate-and-stride", dict(rate=2, stride=2), ValueError,
     m("rate [2, 2] and stride [2, 2] are both above 1", "both stride values need to be one")),
    ("rate-and-stride-mixed", dict(rate=[1, 2], stride=[2, 1]), ValueError,
     m("rate [1, 2] and stride [2, 1] are both above 1", "need to be one")),
    ("padding-unknown", dict(padding="FULL"), ValueError, m("Invalid padding string 'FULL'", "['SAME', 'VALID']")),
    ("padding-int", dict(padding=1), ValueError, m("Invalid padding string 1", "['SAME', 'VALID']")),
    ("padding-none", dict(padding=None), ValueError, m("Invalid padding string None", "['SAME', 'VALID']")),
    ("padding-empty", dict(padding=""), ValueError, m("Invalid padding string ''", "['SAME', 'VALID']")),
    ("data-format-unknown", dict(data_format="NCWH"), ValueError, m("data_format", "NCHW or NHWC, got 'NCWH'")),
    ("data-format-lowercase", dict(data_format="nhwc"), ValueError, m("data_format", "NCHW or NHWC, got 'nhwc'")),
    ("data-format-none", dict(data_format=None), ValueError, m("data_format", "NCHW or NHWC, got None")),
    ("activation-str", dict(activation_fn="relu"), TypeError, m("Invalid activation_fn 'relu'", "callable or None")),
    ("activation-int", dict(activation_fn=1), TypeError, m("Invalid activation_fn 1", "callable or None")),
    ("normalizer-int", dict(normalizer_fn=3), TypeError, m("Invalid normalizer_fn 3", "callable or None")),
    ("normalizer-str", dict(normalizer_fn="batch_norm"), TypeError,
     m("Invalid normalizer_fn 'batch_norm'", "callable or None")),
    ("normalizer-params-list", dict(normalizer_fn=sc.batch_norm, normalizer_params=[1]), TypeError,
     m("Invalid normalizer_params [1]", "dict or None")),
    ("normalizer-params-str", dict(normalizer_fn=sc.batch_norm, normalizer_params="scale"), TypeError,
     m("Invalid normalizer_params 'scale'", "dict or None")),
    ("normalizer-params-unknown-key", dict(normalizer_fn=sc.batch_norm, normalizer_params={"bogus": 1}),
     TypeError, m("Invalid normalizer_params keys ['bogus']", "batch_norm", "should be among", "'is_training'")),
    ("normalizer-params-misspelt-key", dict(normalizer_fn=sc.batch_norm,
                                            normalizer_params={"scale": True, "is_trainng": False}),
     TypeError, m("Invalid normalizer_params keys ['is_trainng']", "should be among", "'is_training'")),
    ("normalizer-params-input-key", dict(normalizer_fn=sc.batch_norm, normalizer_params={"inputs": 1}),
     TypeError, m("Invalid normalizer_params keys ['inputs']", "should be among", "'decay'")),
    ("normalizer-params-bad-value", dict(normalizer_fn=sc.batch_norm, normalizer_params={"decay": 2.0}),
     ValueError, m("Invalid decay 2.0", "must be in [0.0, 1.0]")),
    ("weights-initializer-int", dict(weights_initializer=3), TypeError,
     m("Invalid weights_initializer 3", "expected a callable")),
    ("weights-regularizer-float", dict(weights_regularizer=0.1), TypeError,
     m("Invalid weights_regularizer 0.1", "callable or None")),
    ("biases-initializer-str", dict(biases_initializer="zeros"), TypeError,
     m("Invalid biases_initializer 'zeros'", "callable or None")),
    ("biases-regularizer-float", dict(biases_regularizer=0.1), TypeError,
     m("Invalid biases_regularizer 0.1", "callable or None")),
    ("reuse-int", dict(reuse=1, scope="other"), ValueError,
     m("reuse parameter must be True or False or None or AUTO_REUSE, got 1")),
    ("reuse-str", dict(reuse="yes", scope="other"), ValueError,
     m("reuse parameter must be True or False or None or AUTO_REUSE, got 'yes'")),
    ("reuse-without-scope", dict(reuse=True), ValueError, m("reuse=True cannot be used without a name_or_scope")),
    ("reuse-missing-scope", dict(reuse=True, scope="missing"), ValueError,
     m("Variable missing/depthwise_weights does not exist", "reuse=AUTO_REUSE")),
    ("variables-collections-str", dict(variables_collections="c"), TypeError,
     m("Invalid variables_collections 'c'", "list of collection names or a dict")),
    ("variables-collections-int", dict(variables_collections=3), TypeError,
     m("Invalid variables_collections 3", "list of collection names")),
    ("variables-collections-dict-str", dict(variables_collections={"weights": "c"}), TypeError,
     m("Invalid variables_collections['weights'] 'c'", "list of collection names")),
    ("outputs-collections-dict", dict(outputs_collections={"a": ["b"]}), TypeError,
     m("Invalid outputs_collections {'a': ['b']}", "list of collection names")),
    ("scope-space", dict(scope="conv 1"), ValueError, m("Invalid variable scope name 'conv 1'")),
    ("variables-collections-unhashable", dict(variables_collections=[["a"]]), TypeError,
     m("Invalid variables_collections [['a']]: collection names must be hashable, got ['a']")),
    ("outputs-collections-unhashable", dict(outputs_collections=["ok", {}]), TypeError,
     m("Invalid outputs_collections ['ok', {}]: collection names must be hashable, got {}")),
    ("initializer-returns-none", dict(weights_initializer=lambda shape, dtype=None, **kw: None), TypeError,
     m("Initializer of variable SeparableConv2d/depthwise_weights returned None: expected a tensor")),
    ("trainable-int", dict(trainable=2), TypeError, m("Invalid trainable 2", "expected a bool")),
    ("trainable-none", dict(trainable=None), TypeError, m("Invalid trainable None", "expected a bool")),
    ("scope-int", dict(scope=3), TypeError, m("Invalid scope 3", "non-empty string, a VariableScope or None")),
    ("scope-empty", dict(scope=""), ValueError, m("Invalid scope ''", "non-empty string, a VariableScope or None")),
    ("inputs-rank3", dict(inputs=x((5, 5, 3))), ValueError, m("Invalid inputs rank 3", "[5, 5, 3]", "4-D tensor")),
    ("inputs-rank5", dict(inputs=x((1, 1, 5, 5, 3))), ValueError, m("Invalid inputs rank 5", "4-D tensor")),
    ("inputs-rank0", dict(inputs=torch.tensor(1.0)), ValueError, m("Invalid inputs rank 0", "4-D tensor")),
    ("inputs-int32", dict(inputs=x(dtype=torch.int32)), TypeError,
     m("Invalid inputs dtype torch.int32", "floating-point tensor")),
    ("inputs-bool", dict(inputs=x(dtype=torch.bool)), TypeError,
     m("Invalid inputs dtype torch.bool", "floating-point tensor")),
    ("inputs-complex", dict(inputs=x(dtype=torch.complex64)), TypeError,
     m("Invalid inputs dtype torch.complex64", "floating-point tensor")),
    ("inputs-numpy-int", dict(inputs=np.ones((1, 5, 5, 3), np.int64)), TypeError,
     m("Invalid inputs dtype torch.int64", "floating-point")),
    ("inputs-numpy-object", dict(inputs=np.full((1, 2, 2, 1), None)), TypeError,
     m("Invalid inputs array dtype object", "floating-point array")),
    ("inputs-numpy-str", dict(inputs=np.full((1, 2, 2, 1), "a")), TypeError,
     m("Invalid inputs array dtype <U1", "floating-point array")),
    ("inputs-list", dict(inputs=[[[[1.0]]]]), TypeError, m("Invalid inputs of type list", "torch.Tensor or a numpy array")),
    ("inputs-str", dict(inputs="image"), TypeError, m("Invalid inputs of type str", "torch.Tensor or a numpy array")),
    ("inputs-none", dict(inputs=None), TypeError, m("Invalid inputs of type NoneType", "torch.Tensor or a numpy array")),
    ("inputs-zero-channels", dict(inputs=x((1, 5, 5, 0))), ValueError,
     m("Invalid inputs shape [1, 5, 5, 0]", "channel dimension must not be 0")),
    ("inputs-zero-channels-nchw", dict(inputs=x((1, 0, 5, 5)), data_format="NCHW"), ValueError,
     m("Invalid inputs shape [1, 0, 5, 5]", "channel dimension must not be 0")),
    ("inputs-zero-height", dict(inputs=x((1, 0, 5, 3))), ValueError,
     m("Invalid inputs shape [1, 0, 5, 3]", "height and width must be at least 1")),
    ("inputs-zero-width", dict(inputs=x((2, 5, 0, 3))), ValueError,
     m("Invalid inputs shape [2, 5, 0, 3]", "height and width must be at least 1")),
    ("inputs-smaller-than-valid-kernel", dict(inputs=x((1, 2, 5, 3)), padding="VALID"), ValueError,
     m("Input spatial size [2, 5] is smaller than the dilated kernel size [3, 3]", "VALID")),
    ("inputs-smaller-than-dilated-kernel", dict(inputs=x((1, 5, 5, 3)), padding="VALID", rate=3), ValueError,
     m("Input spatial size [5, 5] is smaller than the dilated kernel size [7, 7]", "VALID")),
    # The graph holds scope "pre": 3 input channels, float32, 4 outputs, multiplier 1, kernel 3.
    ("reuse-other-channels", dict(inputs=x((1, 5, 5, 2)), scope="pre", reuse=True), ValueError,
     m("Trying to share variable pre/depthwise_weights", "specified shape [3, 3, 2, 1]", "found shape [3, 3, 3, 1]")),
    ("reuse-other-dtype", dict(inputs=x(dtype=torch.float64), scope="pre", reuse=True), ValueError,
     m("Trying to share variable pre/depthwise_weights", "specified dtype torch.float64", "found dtype torch.float32")),
    ("reuse-other-num-outputs", dict(num_outputs=5, scope="pre", reuse=True), ValueError,
     m("Trying to share variable pre/pointwise_weights", "specified shape [1, 1, 3, 5]", "found shape [1, 1, 3, 4]")),
    ("reuse-other-multiplier", dict(depth_multiplier=2, scope="pre", reuse=True), ValueError,
     m("Trying to share variable pre/depthwise_weights", "specified shape [3, 3, 3, 2]", "found shape [3, 3, 3, 1]")),
    ("reuse-other-kernel", dict(kernel_size=[3, 5], scope="pre", reuse=True), ValueError,
     m("Trying to share variable pre/depthwise_weights", "specified shape [3, 5, 3, 1]", "found shape [3, 3, 3, 1]")),
    ("reuse-other-device", dict(scope="on_meta", reuse=True), ValueError,
     m("Variable on_meta/depthwise_weights:0 is on device meta", "inputs are on device cpu")),
    ("create-existing", dict(scope="pre"), ValueError,
     m("Variable pre/depthwise_weights already exists, disallowed", "reuse=True or reuse=AUTO_REUSE")),
]

# (id, keyword overrides of batch_norm(x()), error, match); the graph holds "bn_pre" (3 channels).
BATCH_NORM_CASES = [
    ("decay-above-one", dict(decay=2), ValueError, m("Invalid decay 2", "must be in [0.0, 1.0]")),
    ("decay-negative", dict(decay=-0.1), ValueError, m("Invalid decay -0.1", "must be in [0.0, 1.0]")),
    ("decay-str", dict(decay="a"), TypeError, m("Invalid decay 'a'", "expected a float")),
    ("decay-bool", dict(decay=True), TypeError, m("Invalid decay True", "expected a float")),
    ("decay-none", dict(decay=None), TypeError, m("Invalid decay None", "expected a float")),
    ("epsilon-negative", dict(epsilon=-1), ValueError, m("Invalid epsilon -1", "must be in [0.0, inf)")),
    ("epsilon-inf", dict(epsilon=float("inf")), ValueError, m("Invalid epsilon inf", "must be in [0.0, inf)")),
    ("epsilon-str", dict(epsilon="x"), TypeError, m("Invalid epsilon 'x'", "expected a float")),
    ("center-int", dict(center=1), TypeError, m("Invalid center 1", "expected a bool")),
    ("scale-str", dict(scale="yes"), TypeError, m("Invalid scale 'yes'", "expected a bool")),
    ("trainable-none", dict(trainable=None), TypeError, m("Invalid trainable None", "expected a bool")),
    ("is-training-int-2", dict(is_training=2), TypeError,
     m("Invalid is_training 2", "a bool, a numpy bool, the int 1 or 0, or a scalar bool tensor")),
    ("is-training-none", dict(is_training=None), TypeError, m("Invalid is_training None", "the int 1 or 0")),
    ("is-training-float", dict(is_training=1.0), TypeError, m("Invalid is_training 1.0", "the int 1 or 0")),
    ("is-training-str", dict(is_training="True"), TypeError,
     m("Invalid is_training 'True'", "a bool, a numpy bool, the int 1 or 0, or a scalar bool tensor")),
    ("is-training-float-tensor", dict(is_training=torch.tensor(1.0)), TypeError,
     m("Invalid is_training tensor(1.)", "or a scalar bool tensor")),
    ("is-training-vector", dict(is_training=torch.tensor([True, False])), TypeError,
     m("Invalid is_training tensor([ True, False])", "scalar bool tensor")),
    ("activation-int", dict(activation_fn=1), TypeError, m("Invalid activation_fn 1", "callable or None")),
    ("param-initializers-list", dict(param_initializers=[1]), TypeError,
     m("Invalid param_initializers [1]", "dict or None")),
    ("param-initializers-key", dict(param_initializers={"bogus": sc.ones_initializer()}), ValueError,
     m("Invalid param_initializers keys ['bogus']", "['beta', 'gamma', 'moving_mean', 'moving_variance']")),
    ("param-initializers-value", dict(param_initializers={"beta": 1}), TypeError,
     m("Invalid initializer 1 for variable BatchNorm/beta", "callable or an array")),
    ("param-regularizers-key", dict(param_regularizers={"moving_mean": sc.l2_regularizer(0.1)}), ValueError,
     m("Invalid param_regularizers keys ['moving_mean']", "['beta', 'gamma']")),
    ("param-regularizers-value", dict(param_regularizers={"beta": 1}), TypeError,
     m("Invalid regularizer 1 for variable BatchNorm/beta", "expected a callable")),
    ("variables-collections-str", dict(variables_collections="c"), TypeError,
     m("Invalid variables_collections 'c'", "list of collection names")),
    ("updates-collections-int", dict(updates_collections=3), TypeError,
     m("Invalid updates_collections 3", "list of collection names")),
    ("fused-str", dict(fused="yes"), TypeError, m("Invalid fused 'yes'", "expected a bool")),
    ("data-format", dict(data_format="NC"), ValueError, m("data_format", "NCHW or NHWC, got 'NC'")),
    ("batch-weights", dict(batch_weights=torch.ones(1)), ValueError,
     m("batch_weights=tensor([1.]) is not supported", "only None")),
    ("renorm", dict(renorm=True), ValueError, m("renorm=True is not supported", "only False")),
    ("zero-debias", dict(zero_debias_moving_mean=True), ValueError,
     m("zero_debias_moving_mean=True is not supported", "only False")),
    ("renorm-clipping", dict(renorm_clipping={"rmax": 3.0}), ValueError,
     m("renorm_clipping={'rmax': 3.0} is not supported", "only None")),
    ("scope-int", dict(scope=3), TypeError, m("Invalid scope 3", "non-empty string, a VariableScope or None")),
    ("scope-empty", dict(scope=""), ValueError, m("Invalid scope ''", "non-empty string")),
    ("reuse-int", dict(reuse=1, scope="other"), ValueError, m("reuse parameter must be", "got 1")),
    ("reuse-without-scope", dict(reuse=True), ValueError, m("reuse=True cannot be used without a name_or_scope")),
    ("inputs-rank1", dict(inputs=x((3,))), ValueError, m("Invalid inputs rank 1", "[3]", "expected rank >= 2")),
    ("inputs-int", dict(inputs=x(dtype=torch.int64)), TypeError, m("Invalid inputs dtype torch.int64", "floating-point")),
    ("inputs-complex", dict(inputs=x(dtype=torch.complex128)), TypeError,
     m("Invalid inputs dtype torch.complex128", "floating-point")),
    ("inputs-list", dict(inputs=[1.0]), TypeError, m("Invalid inputs of type list", "torch.Tensor or a numpy array")),
    ("inputs-zero-channels", dict(inputs=x((2, 3, 3, 0))), ValueError,
     m("Invalid inputs shape [2, 3, 3, 0]", "channel dimension must not be 0")),
    ("reuse-other-channels", dict(inputs=x((1, 5, 5, 2)), scope="bn_pre", reuse=True), ValueError,
     m("Trying to share variable bn_pre/beta", "specified shape [2]", "found shape [3]")),
    ("reuse-other-dtype", dict(inputs=x(dtype=torch.float64), scope="bn_pre", reuse=True), ValueError,
     m("Trying to share variable bn_pre/beta", "specified dtype torch.float64", "found dtype torch.float32")),
]

# (id, keyword overrides of get_variable("v_new", [2]), error, match); the graph holds "v" [2] float32.
GET_VARIABLE_CASES = [
    ("name-none", dict(name=None), TypeError, m("get_variable: name must be a non-empty string, got None")),
    ("name-int", dict(name=3), TypeError, m("name must be a non-empty string, got 3")),
    ("name-empty", dict(name=""), TypeError, m("name must be a non-empty string, got ''")),
    ("shape-negative", dict(shape=[-1]), ValueError,
     m("Invalid shape [-1] for variable v_new", "non-negative ints, got -1")),
    ("shape-float", dict(shape=[1.5]), ValueError, m("Invalid shape [1.5]", "non-negative ints, got 1.5")),
    ("shape-bool", dict(shape=[True]), ValueError, m("Invalid shape [True]", "non-negative ints, got True")),
    ("shape-float-scalar", dict(shape=3.0), TypeError, m("Invalid shape 3.0 for variable v_new", "list of non-negative ints")),
    ("shape-str", dict(shape="ab"), ValueError, m("Invalid shape 'ab'", "non-negative ints, got 'a'")),
    ("shape-missing", dict(shape=None), ValueError, m("Shape of a new variable (v_new) must be fully defined")),
    ("dtype-name", dict(dtype="floaty"), TypeError, m("Invalid dtype 'floaty'", "torch.dtype, a numpy dtype")),
    ("dtype-int", dict(dtype=3), TypeError, m("Invalid dtype 3", "torch.dtype, a numpy dtype")),
    ("dtype-complex-without-initializer", dict(dtype=torch.complex64), ValueError,
     m("An initializer for variable v_new of torch.complex64 is required")),
    ("initializer-int", dict(initializer=3), TypeError, m("Invalid initializer 3 for variable v_new", "callable or an array")),
    ("initializer-str", dict(initializer="zeros"), TypeError, m("Invalid initializer 'zeros'", "callable or an array")),
    ("initializer-array-shape", dict(initializer=np.ones(3)), ValueError,
     m("Initializer of variable v_new has shape [3], but shape [2] was specified")),
    ("initializer-wrong-result", dict(initializer=lambda shape, dtype=None: torch.ones(5)), ValueError,
     m("Initializer of variable v_new returned shape [5], expected [2]")),
    ("initializer-returns-str", dict(initializer=lambda shape, dtype=None: "x"), TypeError,
     m("Initializer of variable v_new returned 'x': expected a tensor, an array or a number")),
    ("collections-unhashable", dict(collections=[["a"]]), TypeError,
     m("Invalid collections [['a']]: collection names must be hashable")),
    ("custom-getter-returns-none", dict(custom_getter=lambda getter, name, **kwargs: None), TypeError,
     m("The custom_getter returned None for variable v_new: expected a variable (a torch.Tensor)")),
    ("name-space", dict(name="has space"), ValueError,
     m("Invalid variable name 'has space': TF names must match the pattern")),
    ("name-colon", dict(name="w:0"), ValueError, m("Invalid variable name 'w:0'")),
    ("name-underscore-first", dict(name="_w"), ValueError, m("Invalid variable name '_w'")),
    ("regularizer-int", dict(regularizer=3), TypeError, m("Invalid regularizer 3 for variable v_new", "callable")),
    ("trainable-int", dict(trainable=2), TypeError, m("trainable must be a bool (or a numpy bool, 1 or 0), got 2")),
    ("trainable-str", dict(trainable="yes"), TypeError, m("trainable must be a bool (or a numpy bool, 1 or 0), got 'yes'")),
    ("collections-str", dict(collections="abc"), TypeError,
     m("Invalid collections 'abc'", "list, tuple or set of collection names, or None")),
    ("collections-int", dict(collections=3), TypeError, m("Invalid collections 3", "list, tuple or set")),
    ("custom-getter-int", dict(custom_getter=3), TypeError, m("Invalid custom_getter 3", "callable or None")),
    ("device-unknown", dict(device="nodevice"), ValueError,
     m("Invalid device 'nodevice'", "torch.device or a device string")),
    ("reuse-other-shape", dict(name="v", shape=[3], reuse=True), ValueError,
     m("Trying to share variable v", "specified shape [3]", "found shape [2]")),
    ("reuse-other-dtype", dict(name="v", dtype=torch.float64, reuse=True), ValueError,
     m("Trying to share variable v", "specified dtype torch.float64", "found dtype torch.float32")),
    ("reuse-missing", dict(name="w", reuse=True), ValueError, m("Variable w does not exist", "AUTO_REUSE")),
    ("create-existing", dict(name="v"), ValueError, m("Variable v already exists, disallowed")),
]

# (id, variable_scope arguments, error, match)
VARIABLE_SCOPE_CASES = [
    ("name-int", dict(name_or_scope=3), TypeError, m("name_or_scope must be a string or VariableScope, got 3")),
    ("name-missing", dict(name_or_scope=None), TypeError, m("If default_name is None then name_or_scope is required")),
    ("name-empty", dict(name_or_scope=""), ValueError, m("name_or_scope must be a non-empty string")),
    ("reuse-int", dict(name_or_scope="s", reuse=1), ValueError,
     m("reuse parameter must be True or False or None or AUTO_REUSE, got 1")),
    ("reuse-str", dict(name_or_scope="s", reuse="x"), ValueError, m("reuse parameter must be", "got 'x'")),
    ("reuse-with-default-name", dict(name_or_scope=None, default_name="d", reuse=True), ValueError,
     m("reuse=True cannot be used without a name_or_scope")),
    ("auto-reuse-with-default-name", dict(name_or_scope=None, default_name="d", reuse=sc.AUTO_REUSE),
     ValueError, m("reuse=AUTO_REUSE cannot be used without a name_or_scope")),
    ("name-non-ascii", dict(name_or_scope="ñame"), ValueError,
     m("Invalid variable scope name 'ñame': TF names must match the pattern")),
    ("default-name-space", dict(name_or_scope=None, default_name="my scope"), ValueError,
     m("Invalid variable scope name 'my scope'")),
    ("default-name-int", dict(name_or_scope=None, default_name=3), TypeError,
     m("Invalid default_name 3", "non-empty string or None")),
    ("default-name-empty", dict(name_or_scope=None, default_name=""), TypeError,
     m("Invalid default_name ''", "non-empty string or None")),
    ("initializer-int", dict(name_or_scope="s", initializer=3), TypeError,
     m("Invalid initializer 3", "callable or None")),
    ("regularizer-float", dict(name_or_scope="s", regularizer=0.5), TypeError,
     m("Invalid regularizer 0.5", "callable or None")),
    ("custom-getter-int", dict(name_or_scope="s", custom_getter=3), TypeError,
     m("Invalid custom_getter 3", "callable or None")),
    ("dtype-name", dict(name_or_scope="s", dtype="floaty"), TypeError,
     m("Invalid dtype 'floaty'", "torch.dtype, a numpy dtype")),
]

# (id, call, error, match): constructors, and initializers called with a bad shape or dtype.
FACTORY_CASES = [
    ("constant-str", lambda: sc.constant_initializer("a"), TypeError,
     m("Invalid value 'a' for constant_initializer", "expected numbers")),
    ("constant-too-many", lambda: sc.constant_initializer([1, 2, 3])([2]), ValueError,
     m("Too many elements provided. Needed at most 2, but received 3")),
    ("constant-verify-shape", lambda: sc.constant_initializer([1, 2], verify_shape=True)([1, 2]), TypeError,
     m("Expected Tensor's shape: [1, 2], got [2]")),
    ("uniform-minval-str", lambda: sc.random_uniform_initializer(minval="a"), TypeError,
     m("Invalid minval 'a'", "real number")),
    ("uniform-maxval-bool", lambda: sc.random_uniform_initializer(maxval=True), TypeError,
     m("Invalid maxval True", "real number")),
    ("uniform-max-below-min", lambda: sc.random_uniform_initializer(1, 0), ValueError,
     m("Invalid maxval 0", "must be >= minval 1")),
    ("normal-stddev-negative", lambda: sc.random_normal_initializer(stddev=-1), ValueError,
     m("Invalid stddev -1", "must be >= 0.0")),
    ("normal-mean-str", lambda: sc.random_normal_initializer(mean="0"), TypeError,
     m("Invalid mean '0'", "real number")),
    ("truncated-stddev-str", lambda: sc.truncated_normal_initializer(stddev="x"), TypeError,
     m("Invalid stddev 'x'", "real number")),
    ("seed-float", lambda: sc.random_normal_initializer(seed=1.5), TypeError, m("Invalid seed 1.5", "int or None")),
    ("seed-bool", lambda: sc.truncated_normal_initializer(seed=True), TypeError, m("Invalid seed True", "int or None")),
    ("seed-too-large", lambda: sc.random_uniform_initializer(seed=2 ** 70), ValueError,
     m(f"Invalid seed {2 ** 70}", "[-2**63, 2**64 - 1]")),
    ("seed-too-small", lambda: sc.xavier_initializer(seed=-(2 ** 63) - 1), ValueError,
     m("Invalid seed", "[-2**63, 2**64 - 1]")),
    ("variance-mode", lambda: sc.variance_scaling_initializer(mode="FAN"), TypeError,
     m("Unknown mode 'FAN'", "['FAN_IN', 'FAN_OUT', 'FAN_AVG']")),
    ("variance-factor-negative", lambda: sc.variance_scaling_initializer(factor=-1.0), ValueError,
     m("Invalid factor -1.0", "must be >= 0.0")),
    ("variance-uniform-int", lambda: sc.variance_scaling_initializer(uniform=1), TypeError,
     m("Invalid uniform 1", "expected a bool")),
    ("xavier-uniform-int", lambda: sc.xavier_initializer(uniform=1), TypeError, m("Invalid uniform 1", "bool")),
    ("xavier-dtype-int", lambda: sc.xavier_initializer(dtype=torch.int32), TypeError,
     m("non-floating point type torch.int32", "expected float16, bfloat16, float32 or float64")),
    ("normal-dtype-int", lambda: sc.random_normal_initializer(dtype=torch.int64), TypeError,
     m("non-floating point type torch.int64", "expected float16")),
    ("zeros-dtype-name", lambda: sc.zeros_initializer(dtype="bad"), TypeError,
     m("Invalid dtype 'bad'", "torch.dtype, a numpy dtype")),
    ("glorot-dtype-name", lambda: sc.glorot_uniform_initializer(dtype="floaty"), TypeError,
     m("Invalid dtype 'floaty'", "torch.dtype")),
    ("call-shape-negative", lambda: sc.random_normal_initializer()([-1]), ValueError,
     m("Invalid shape [-1]", "non-negative ints, got -1")),
    ("call-shape-float", lambda: sc.ones_initializer()([2.5]), ValueError,
     m("Invalid shape [2.5]", "non-negative ints, got 2.5")),
    ("call-shape-str", lambda: sc.zeros_initializer()("ab"), TypeError,
     m("Invalid shape 'ab'", "list of non-negative ints")),
    ("call-shape-int", lambda: sc.xavier_initializer()(3), TypeError, m("Invalid shape 3", "list of non-negative ints")),
    ("call-dtype-int", lambda: sc.truncated_normal_initializer()([2], dtype=torch.int32), TypeError,
     m("non-floating point type torch.int32", "expected float16")),
    ("call-dtype-name", lambda: sc.ones_initializer()([2], dtype="bad"), TypeError, m("Invalid dtype 'bad'")),
    ("constant-dtype-name", lambda: sc.constant_initializer(1.0, dtype="bad"), TypeError,
     m("Invalid dtype 'bad'", "torch.dtype, a numpy dtype")),
    ("constant-object", lambda: sc.constant_initializer(object()), TypeError,
     m("Invalid value <object object", "for constant_initializer: expected numbers")),
    ("constant-call-shape-negative", lambda: sc.constant_initializer([1.0, 2.0])([-1]), ValueError,
     m("Invalid shape [-1]", "non-negative ints, got -1")),
    ("truncated-mean-bool", lambda: sc.truncated_normal_initializer(mean=True), TypeError,
     m("Invalid mean True", "real number")),
    ("uniform-dtype-name", lambda: sc.random_uniform_initializer(dtype="floaty"), TypeError,
     m("Invalid dtype 'floaty'", "torch.dtype")),
    ("variance-seed-float", lambda: sc.variance_scaling_initializer(seed=2.5), TypeError,
     m("Invalid seed 2.5", "int or None")),
    ("variance-factor-str", lambda: sc.variance_scaling_initializer(factor="2"), TypeError,
     m("Invalid factor '2'", "real number")),
    ("variance-dtype-int", lambda: sc.variance_scaling_initializer(dtype=torch.int8), TypeError,
     m("non-floating point type torch.int8", "expected float16, bfloat16, float32 or float64")),
    ("glorot-seed-str", lambda: sc.glorot_uniform_initializer(seed="1"), TypeError,
     m("Invalid seed '1'", "int or None")),
    ("l1-int", lambda: sc.l1_regularizer(1), ValueError, m("scale cannot be an integer: 1")),
    ("l1-bool", lambda: sc.l1_regularizer(True), ValueError, m("scale cannot be an integer: True")),
    ("l1-negative", lambda: sc.l1_regularizer(-1.0), ValueError, m("scale less than 0 on a regularizer: -1.0")),
    ("l1-str", lambda: sc.l1_regularizer("a"), TypeError, m("Invalid scale 'a'", "expected a float")),
    ("l2-int", lambda: sc.l2_regularizer(2), ValueError, m("scale cannot be an integer: 2")),
    ("l2-negative", lambda: sc.l2_regularizer(-0.5), ValueError, m("scale less than 0 on a regularizer: -0.5")),
    ("l2-none", lambda: sc.l2_regularizer(None), TypeError, m("Invalid scale None", "expected a float")),
    ("l1-l2-int", lambda: sc.l1_l2_regularizer(1, 1.0), ValueError, m("scale_l1 cannot be an integer: 1")),
    ("l1-l2-negative", lambda: sc.l1_l2_regularizer(1.0, -1.0), ValueError,
     m("scale less than 0 on a regularizer: -1.0")),
    ("l1-l2-str", lambda: sc.l1_l2_regularizer(1.0, "x"), TypeError, m("Invalid scale_l2 'x'", "expected a float")),
    ("sum-not-a-list", lambda: sc.sum_regularizer(3), TypeError,
     m("Invalid regularizer_list 3", "list of regularizers")),
    ("sum-str", lambda: sc.sum_regularizer("l2"), TypeError, m("Invalid regularizer_list 'l2'", "list")),
    ("sum-bad-member", lambda: sc.sum_regularizer([sc.l2_regularizer(0.1), 3]), TypeError,
     m("Invalid regularizer 3 in regularizer_list", "expected a callable")),
]

CASE_COUNT = (len(SEPARABLE_CASES) + len(BATCH_NORM_CASES) + len(GET_VARIABLE_CASES)
              + len(VARIABLE_SCOPE_CASES) + len(FACTORY_CASES))


def _params(cases):
    return [pytest.param(*case[1:], id=case[0]) for case in cases]


@pytest.fixture
def populated_graph():
    """A graph holding a layer of each kind, a variable and a trained batch norm to compare against."""
    graph = sc.Graph()
    with graph.as_default():
        sc.separable_conv2d(x(), 4, 3, 1, scope="pre", weights_regularizer=sc.l2_regularizer(0.1))
        sc.separable_conv2d(x().to("meta"), 4, 3, 1, scope="on_meta")
        sc.batch_norm(torch.randn(2, 3, 3, 3), scale=True, scope="bn_pre")
        sc.get_variable("v", [2], initializer=sc.ones_initializer())
        yield graph


def _assert_fails_cleanly(graph, call, error, match):
    before = snapshot(graph)
    with pytest.raises(error, match=match):
        call()
    assert snapshot(graph) == before


@pytest.mark.parametrize("kwargs, error, match", _params(SEPARABLE_CASES))
def test_separable_conv2d_bad_argument(populated_graph, kwargs, error, match):
    call_kwargs = dict(inputs=x(), num_outputs=4, kernel_size=3, depth_multiplier=1)
    call_kwargs.update(kwargs)
    _assert_fails_cleanly(populated_graph, lambda: sc.separable_conv2d(**call_kwargs), error, match)
    # The failed call consumed no default name.
    sc.separable_conv2d(x(), 4, 3, 1)
    assert "SeparableConv2d/depthwise_weights:0" in [v.name for v in sc.global_variables()]


@pytest.mark.parametrize("kwargs, error, match", _params(BATCH_NORM_CASES))
def test_batch_norm_bad_argument(populated_graph, kwargs, error, match):
    call_kwargs = dict(inputs=x())
    call_kwargs.update(kwargs)
    _assert_fails_cleanly(populated_graph, lambda: sc.batch_norm(**call_kwargs), error, match)
    sc.batch_norm(x())
    assert "BatchNorm/beta:0" in [v.name for v in sc.global_variables()]


@pytest.mark.parametrize("kwargs, error, match", _params(GET_VARIABLE_CASES))
def test_get_variable_bad_argument(populated_graph, kwargs, error, match):
    call_kwargs = dict(name="v_new", shape=[2])
    call_kwargs.update(kwargs)
    reuse = call_kwargs.pop("reuse", None)

    def call():
        with sc.variable_scope(sc.get_variable_scope(), reuse=reuse):
            sc.get_variable(**call_kwargs)

    _assert_fails_cleanly(populated_graph, call, error, match)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(collections=5), TypeError, m("Invalid collections 5: expected a list, tuple or set")),
    (dict(custom_getter=5), TypeError, m("Invalid custom_getter 5: expected a callable or None")),
    (dict(custom_getter=lambda name, **kwargs: "w"), TypeError,
     m("The custom_getter returned 'w' for variable w: expected a variable")),
])
def test_slim_variable_bad_argument(populated_graph, kwargs, error, match):
    _assert_fails_cleanly(populated_graph, lambda: sc.variable("w", [2], **kwargs), error, match)


@pytest.mark.parametrize("kwargs, error, match", _params(VARIABLE_SCOPE_CASES))
def test_variable_scope_bad_argument(populated_graph, kwargs, error, match):
    def call():
        with sc.variable_scope(**kwargs):
            pytest.fail("the block must not run")

    _assert_fails_cleanly(populated_graph, call, error, match)
    # The scope machinery still works and gives the first default name.
    with sc.variable_scope(None, default_name="d") as scope:
        assert scope.name == "d"


@pytest.mark.parametrize("call, error, match", _params(FACTORY_CASES))
def test_initializer_and_regularizer_bad_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_the_matrix_is_large_and_ids_are_unique():
    ids = [case[0] for cases in (SEPARABLE_CASES, BATCH_NORM_CASES, GET_VARIABLE_CASES,
                                 VARIABLE_SCOPE_CASES, FACTORY_CASES) for case in cases]
    assert CASE_COUNT == len(ids) >= 200
    for cases in (SEPARABLE_CASES, BATCH_NORM_CASES, GET_VARIABLE_CASES, VARIABLE_SCOPE_CASES, FACTORY_CASES):
        assert len({case[0] for case in cases}) == len(cases)


def test_failed_batch_norm_call_rolls_back_its_moving_statistics_update(populated_graph):
    """A call that fails after batch norm updated its moving averages leaves them as they were."""
    def boom(_):
        raise ValueError("activation failed")

    before = snapshot(populated_graph)
    with pytest.raises(ValueError, match="activation failed"):
        sc.batch_norm(torch.randn(2, 5, 5, 3), scope="bn_pre", reuse=True, activation_fn=boom)
    assert snapshot(populated_graph) == before


def test_reuse_with_inputs_on_another_device_is_refused():
    # The meta device stands in for an accelerator: it has no values, only a device.
    graph = sc.Graph()
    with graph.as_default():
        sc.separable_conv2d(x().to("meta"), 4, 3, 1, scope="other")
        before = snapshot(graph)
        with pytest.raises(ValueError, match=m("Variable other/depthwise_weights:0 is on device meta",
                                                "inputs are on device cpu")):
            sc.separable_conv2d(x(), 4, 3, 1, scope="other", reuse=True)
        assert snapshot(graph) == before


# -- a zero-size batch, as TF --------------------------------------------------------------
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_zero_size_batch_gives_an_empty_output_of_tf_shape(data_format):
    inputs = torch.zeros((0, 7, 6, 3) if data_format == "NHWC" else (0, 3, 7, 6))
    with sc.Graph().as_default():
        y = sc.separable_conv2d(inputs, 4, 3, 2, stride=2, data_format=data_format)
        z = sc.separable_conv2d(inputs, None, 3, 2, padding="VALID", data_format=data_format)
        assert tuple(y.shape) == ((0, 4, 3, 4) if data_format == "NHWC" else (0, 4, 4, 3))
        assert tuple(z.shape) == ((0, 5, 4, 6) if data_format == "NHWC" else (0, 6, 5, 4))
        y.sum().backward()
        assert all(v.grad is not None and not v.grad.any() for v in sc.trainable_variables()[:3])


def test_zero_size_batch_in_training_batch_norm_sets_moving_statistics_to_nan_as_tf():
    # TF 2.21 / tf-slim, fused and non-fused: output (0, 5, 5, 4), moving_mean and
    # moving_variance all NaN after one training step on an empty batch.
    with sc.Graph().as_default():
        y = sc.separable_conv2d(torch.zeros(0, 5, 5, 3), 4, [3, 3], 2, normalizer_fn=sc.batch_norm,
                                normalizer_params=dict(is_training=True, scale=True))
        assert tuple(y.shape) == (0, 5, 5, 4)
        moving = [v for v in sc.global_variables() if "moving" in v.name]
        assert len(moving) == 2 and all(torch.isnan(v).all() for v in moving)


@pytest.mark.parametrize("flag, as_bool", [(np.bool_(True), True), (np.bool_(False), False), (1, True),
                                           (0, False), (np.int64(1), True)])
def test_batch_norm_takes_the_is_training_flags_tf_takes(flag, as_bool):
    # TF's cond takes numpy bools and the ints 1 and 0 as Python predicates.
    inputs = torch.randn(2, 3, 3, 2, generator=torch.Generator().manual_seed(0))
    outputs = {}
    for name, is_training in (("flag", flag), ("bool", as_bool)):
        with sc.Graph().as_default():
            outputs[name] = sc.batch_norm(inputs, is_training=is_training)
            outputs[name + " moving_mean"] = sc.global_variables()[0].detach().clone()
    for name in ("", " moving_mean"):
        torch.testing.assert_close(outputs["flag" + name], outputs["bool" + name], rtol=0, atol=0)


def test_zero_size_batch_in_inference_batch_norm_leaves_statistics_alone():
    with sc.Graph().as_default():
        y = sc.batch_norm(torch.zeros(0, 4, 4, 2), is_training=False)
        assert tuple(y.shape) == (0, 4, 4, 2)
        mean, variance = [v for v in sc.global_variables() if "moving" in v.name]
        assert torch.equal(mean, torch.zeros(2)) and torch.equal(variance, torch.ones(2))


# -- NaN and Inf propagate -----------------------------------------------------------------
def _variables_by_suffix():
    return {v.op_name.rsplit("/", 1)[1]: v for v in sc.global_variables()}


@pytest.mark.parametrize("shape, kernel, stride, padding", [
    ((1, 6, 6, 2), 3, 1, "SAME"),
    ((1, 6, 6, 2), 3, 2, "SAME"),   # TF's asymmetric SAME padding: the odd row goes bottom
    ((2, 7, 5, 2), [2, 3], 2, "VALID"),
])
@pytest.mark.parametrize("special", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf_propagate_like_the_reference(shape, kernel, stride, padding, special):
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(shape, generator=gen, dtype=torch.float64)
    inputs[0, 2, 3, 0] = special
    inputs[-1, -1, -1, -1] = special
    with sc.Graph().as_default():
        y = sc.separable_conv2d(inputs, 3, kernel, 2, stride=stride, padding=padding,
                                activation_fn=None, biases_initializer=sc.constant_initializer(0.5))
        v = _variables_by_suffix()
        expected = reference.separable_conv2d(inputs, v["depthwise_weights"].detach(),
                                              v["pointwise_weights"].detach(), v["biases"].detach(),
                                              stride=(stride, stride), padding=padding)
    assert not torch.isfinite(expected).all()
    assert torch.equal(torch.isnan(y), torch.isnan(expected))
    assert torch.equal(torch.isinf(y), torch.isinf(expected))
    finite = torch.isfinite(expected)
    torch.testing.assert_close(y[finite], expected[finite], rtol=1e-12, atol=1e-12)


def test_failed_first_template_call_leaves_nothing_and_keeps_the_name(populated_graph):
    def model(inputs):
        net = sc.separable_conv2d(inputs, 4, 3, 1, weights_regularizer=sc.l2_regularizer(0.1))
        # A 3x3 image fails here, after the first layer created its variables and loss entries.
        return sc.separable_conv2d(net, 2, 5, 1, padding="VALID", normalizer_fn=sc.batch_norm)

    template = sc.make_template("model", model)
    before = snapshot(populated_graph)
    with pytest.raises(ValueError, match=m("Input spatial size [3, 3] is smaller than the dilated kernel size [5, 5]")):
        template(x((1, 3, 3, 3)))
    assert snapshot(populated_graph) == before
    with pytest.raises(TypeError, match=m("Invalid inputs dtype torch.int64", "floating-point")):
        template(torch.ones(1, 5, 5, 3, dtype=torch.int64))
    assert snapshot(populated_graph) == before and template.variable_scope is None
    template(x())
    assert template.variable_scope_name == "model/"
    assert len(template.trainable_variables) == 3 + 2 + 1


def test_a_failed_later_template_call_undoes_what_its_layers_did(populated_graph):
    def model(inputs, fail=False):
        net = sc.separable_conv2d(inputs, 4, 3, 1, normalizer_fn=sc.batch_norm,
                                  normalizer_params={"is_training": True}, outputs_collections=["ends"])
        if fail:
            raise RuntimeError("model function failed")
        return net

    template = sc.make_template("model", model)
    template(torch.randn(4, 5, 5, 3))
    before = snapshot(populated_graph)
    with pytest.raises(RuntimeError, match="model function failed"):
        template(torch.randn(4, 5, 5, 3), fail=True)
    assert snapshot(populated_graph) == before  # moving statistics and "ends" included


def test_a_template_whose_first_call_an_enclosing_call_undid_creates_its_variables_again(populated_graph):
    inner = sc.make_template("inner", lambda inputs: sc.separable_conv2d(inputs, 4, 3, 1, scope="conv"))

    def outer_model(inputs, fail):
        net = inner(inputs)
        if fail:
            raise RuntimeError("outer failed after inner's first call")
        return net

    outer = sc.make_template("outer", outer_model)
    before = snapshot(populated_graph)
    with pytest.raises(RuntimeError, match="outer failed"):
        outer(x(), fail=True)
    assert snapshot(populated_graph) == before and inner.variable_scope is None
    outer(x(), fail=False)
    assert [v.name for v in outer.trainable_variables] == [
        "outer/inner/conv/depthwise_weights:0", "outer/inner/conv/pointwise_weights:0",
        "outer/inner/conv/biases:0"]
    assert inner(x()).shape == (1, 5, 5, 4)
