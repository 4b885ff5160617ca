"""TensorFlow's V2 checkpoint bundle format, read and written without TensorFlow.

A V2 checkpoint at prefix ``P`` is two files:

* ``P.index``: an immutable sorted string table (LevelDB's SSTable layout, as
  TF's ``tensorflow/core/lib/io/table*``): data blocks of prefix-compressed
  keys with restart points, an (empty) metaindex block, an index block, each
  block followed by a 5-byte trailer (compression type byte, masked CRC32C),
  and a 48-byte footer ending in the magic number ``0xdb4775248b80fb57``.
  Key ``""`` holds a serialized ``BundleHeaderProto``; every other key is a
  tensor name whose value is a serialized ``BundleEntryProto`` (dtype, shape,
  shard, offset, size, masked CRC32C of the tensor bytes).
* ``P.data-00000-of-00001``: the raw little-endian tensor bytes, back to back.

The few protobuf fields involved are encoded and decoded by hand. CRC32C comes
from ``google-crc32c``; stored CRCs are masked as TF's ``crc32c::Mask`` does.

Everything here is pure Python + NumPy (no torch, no TensorFlow). Files written
by :func:`write_bundle` are byte-for-byte what ``tf.compat.v1.train.Saver``
writes for the same tensors (see ``tools/gen_checkpoints.py``).

Errors: every problem with a checkpoint on disk (missing, truncated, corrupt,
unsupported) raises :class:`CheckpointError`, a ``ValueError`` whose message
names the offending file.
"""
from .bundle import BundleReader, write_bundle
from .crc import masked_crc32c
from .errors import CheckpointError, CheckpointNotFoundError, TensorNotFoundError
from .files import data_filename, index_filename
from .state import (CheckpointState, checkpoint_exists, get_checkpoint_state, latest_checkpoint,
                    resolve_checkpoint_path, update_checkpoint_state)

__all__ = [
    "BundleReader", "CheckpointError", "CheckpointNotFoundError", "CheckpointState",
    "TensorNotFoundError", "checkpoint_exists", "data_filename", "get_checkpoint_state",
    "index_filename", "latest_checkpoint", "masked_crc32c", "resolve_checkpoint_path",
    "update_checkpoint_state", "write_bundle",
]
