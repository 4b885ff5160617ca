"""sepconv: TensorFlow 1.4's ``tf.contrib.layers.separable_conv2d`` on PyTorch.

Change ``tf.contrib.layers`` / ``slim`` to ``sepconv`` and keep the same
variables, scopes, collections and numbers, computed as PyTorch tensors with
autograd on any device.
"""
from ._src.arg_scope import (add_arg_scope, arg_scope, arg_scope_func_key, arg_scoped_arguments,
                             current_arg_scope, has_arg_scope)
from ._src.graph import (AUTO_REUSE, Graph, GraphKeys, Variable, add_to_collection,
                         add_to_collections, get_collection, get_collection_ref,
                         get_default_graph, global_variables, model_variables,
                         reset_default_graph, trainable_variables)
from ._src.initializers import (constant_initializer, glorot_uniform_initializer,
                                ones_initializer, random_normal_initializer,
                                random_uniform_initializer, truncated_normal_initializer,
                                variance_scaling_initializer, xavier_initializer,
                                zeros_initializer)
from ._src.layers import batch_norm, separable_conv2d, separable_convolution2d
from ._src.slim_layers import (avg_pool2d, conv2d, convolution2d, dropout, flatten, max_pool2d,
                                softmax)
from ._src.regularizers import (get_regularization_loss, get_regularization_losses,
                                l1_l2_regularizer, l1_regularizer, l2_regularizer,
                                sum_regularizer)
from ._src.scope import (Template, VariableScope, get_variable, get_variable_scope,
                         make_template, model_variable, variable, variable_scope)
from . import models, nn, train  # sc.models.mobilenet_v1, sc.nn.Template, sc.train.Saver

__version__ = "0.1.0"

__all__ = [
    # submodules
    "models", "nn", "train",
    # slim's layers
    "avg_pool2d", "batch_norm", "conv2d", "convolution2d", "dropout", "flatten", "max_pool2d",
    "separable_conv2d", "separable_convolution2d", "softmax",
    # the TF1 variable system and initializers/regularizers
    "AUTO_REUSE", "Graph", "GraphKeys", "Template", "Variable", "VariableScope",
    "add_arg_scope", "add_to_collection", "add_to_collections", "arg_scope",
    "arg_scope_func_key", "arg_scoped_arguments", "constant_initializer",
    "current_arg_scope", "get_collection", "get_collection_ref", "get_default_graph",
    "get_regularization_loss", "get_regularization_losses", "get_variable",
    "get_variable_scope", "global_variables", "glorot_uniform_initializer", "has_arg_scope",
    "l1_l2_regularizer", "l1_regularizer", "l2_regularizer", "make_template",
    "model_variable", "model_variables", "ones_initializer", "random_normal_initializer",
    "random_uniform_initializer", "reset_default_graph", "sum_regularizer", "trainable_variables",
    "truncated_normal_initializer", "variable", "variable_scope",
    "variance_scaling_initializer", "xavier_initializer", "zeros_initializer",
]
