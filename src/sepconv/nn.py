"""PyTorch modules: the separable layer, batch norm, and TF1-style model functions.

``SeparableConv2d`` and ``BatchNorm`` are ``nn.Module`` versions of the layers,
with TF-layout parameters under TF's names; ``Template`` runs a TF1-style model
function as a module whose ``state_dict`` keys are the TF variable names.
"""
from ._src.nn import BatchNorm, SeparableConv2d, Template, TFCheckpointLoadResult

__all__ = ["BatchNorm", "SeparableConv2d", "TFCheckpointLoadResult", "Template"]
