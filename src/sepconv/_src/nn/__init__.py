"""PyTorch-native modules: ``SeparableConv2d``, ``BatchNorm`` and ``Template``.

The modules keep TF-layout parameters under TF's names and call the same
functional core (:mod:`ops`) as the TF1-style layers, so a module and
:func:`sepconv.separable_conv2d` with the same weights give the same numbers.
``Template`` runs a TF1-style model function in its own :class:`Graph` and
registers the variables it creates as parameters (trainable) and buffers
(non-trainable), keyed by their TF names.
"""
from .batch_norm import BatchNorm
from .separable_conv import SeparableConv2d
from .template import Template
from .tf_checkpoint import TFCheckpointLoadResult

__all__ = ["BatchNorm", "SeparableConv2d", "Template", "TFCheckpointLoadResult"]
