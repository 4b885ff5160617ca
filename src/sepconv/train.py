"""TF checkpoints without TensorFlow: ``tf.compat.v1.train``'s Saver and readers.

Reads and writes TF's V2 bundle format (``.index`` + ``.data-*`` with CRC32C
checks), so checkpoints move both ways between sepconv and TensorFlow.
"""
from ._src.train import (BundleReader, CheckpointError, CheckpointNotFoundError, CheckpointState,
                         NewCheckpointReader, Saver, TensorNotFoundError, checkpoint_exists,
                         get_checkpoint_state, init_from_checkpoint, latest_checkpoint,
                         list_variables, load_checkpoint, load_variable, update_checkpoint_state)

__all__ = [
    "BundleReader", "CheckpointError", "CheckpointNotFoundError", "CheckpointState",
    "NewCheckpointReader", "Saver", "TensorNotFoundError", "checkpoint_exists",
    "get_checkpoint_state", "init_from_checkpoint", "latest_checkpoint", "list_variables",
    "load_checkpoint", "load_variable", "update_checkpoint_state",
]
