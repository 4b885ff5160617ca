"""Reading and writing the two files of a V2 checkpoint: ``<prefix>.index`` and ``<prefix>.data-*``."""
import os
import re

import google_crc32c
import numpy as np

from .crc import _mask
from .dtypes import _NP_TO_TF, _TF_ENUM_NAMES, _TF_NAMES, _TF_TO_NP
from .errors import CheckpointError, CheckpointNotFoundError, TensorNotFoundError
from .files import _fsync_dir, _temp_file, data_filename, index_filename
from .proto import (TENSOR_BUNDLE_VERSION, _DecodeError, _encode_entry, _encode_header, _Entry, _last,
                    _parse_proto)
from .table import TABLE_BLOCK_SIZE, _build_table, _read_table, v1_checkpoint_files

HEADER_KEY = b""
_IO_CHUNK = 1 << 22


# --------------------------------------------------------------------------
# Bundle reader
# --------------------------------------------------------------------------


V1_MESSAGE = ("%s is a TF V1 checkpoint (one table file per shard, no .index), as written by "
              "Saver(write_version=V1) and by slim's releases of 2016-2017; sepconv reads the V2 "
              "format. Convert it once with TensorFlow: restore it with tf.compat.v1.train.Saver "
              "and save it again (V2 is the default).")


class BundleReader:
    """Reads a V2 checkpoint (``<prefix>.index`` + ``<prefix>.data-*``), like TF's ``CheckpointReader``.

    The index is read and checked (block CRCs, key order, header version) when
    the reader is made; each tensor's bytes are checked against their CRC32C
    when read. Any problem raises :class:`CheckpointError` naming the file.

    Example:
        >>> import os, tempfile, torch, sepconv as sc
        >>> prefix = os.path.join(tempfile.mkdtemp(), "model.ckpt-10")
        >>> weights = sc.Variable(torch.ones(3, 3, 8, 16), name="conv/weights:0")
        >>> _ = sc.train.Saver([weights]).save(prefix)
        >>> reader = sc.train.BundleReader(prefix)
        >>> reader.get_variable_to_shape_map()
        {'conv/weights': [3, 3, 8, 16]}
        >>> float(reader.get_tensor("conv/weights").sum())
        1152.0
    """

    def __init__(self, prefix):
        self._prefix = os.fspath(prefix)
        self._index_path = index_filename(self._prefix)
        try:
            with open(self._index_path, "rb") as f:
                table = f.read()
        except FileNotFoundError:
            if v1_checkpoint_files(self._prefix):
                raise CheckpointError(V1_MESSAGE % self._prefix) from None
            raise CheckpointNotFoundError(
                "Checkpoint not found: index file %r does not exist" % self._index_path) from None
        except OSError as e:
            raise CheckpointError("Cannot read checkpoint index %r: %s" % (self._index_path, e)) from e
        try:
            items = _read_table(memoryview(table))
            self._parse_items(items)
        except _DecodeError as e:
            raise CheckpointError("Corrupt checkpoint index %r: %s" % (self._index_path, e)) from None
        self._check_data_files()

    def _parse_items(self, items):
        if not items or items[0][0] != HEADER_KEY:
            raise _DecodeError("missing bundle header entry")
        header = _parse_proto(items[0][1])
        self._num_shards = _last(header, 1)
        endianness = _last(header, 2)
        version = _parse_proto(_last(header, 3, b""))
        if self._num_shards < 1:
            raise _DecodeError("header has num_shards=%d" % self._num_shards)
        if endianness not in (0, 1):
            raise _DecodeError("header has unknown endianness %d" % endianness)
        self._byteorder = "<" if endianness == 0 else ">"
        min_consumer = _last(version, 2)
        if min_consumer > TENSOR_BUNDLE_VERSION or TENSOR_BUNDLE_VERSION in version.get(3, ()):
            raise _DecodeError("checkpoint version (producer %d, min_consumer %d) is not readable "
                               "by bundle version %d" % (_last(version, 1), min_consumer,
                                                         TENSOR_BUNDLE_VERSION))
        self._keys = []  # (key bytes, entry) in index order, slice entries included
        for key, value in items[1:]:
            entry = _Entry.decode(value)
            if not entry.has_slices and entry.shard_id >= self._num_shards:
                raise _DecodeError("tensor %r is in shard %d of %d" % (_name(key), entry.shard_id,
                                                                         self._num_shards))
            self._keys.append((bytes(key), entry))
        # As TF's reader: the entries holding the slices of a partitioned tensor
        # are no tensors of their own; the tensor is listed under its name.
        sliced = tuple(_slice_key_prefix(key) for key, entry in self._keys if entry.has_slices)
        self._entries = {_name(key): entry for key, entry in self._keys
                         if not (sliced and key.startswith(sliced))}

    def _check_data_files(self):
        needed = {}
        for entry in self._entries.values():
            if not entry.has_slices:
                end = entry.offset + entry.size
                needed[entry.shard_id] = max(needed.get(entry.shard_id, 0), end)
        for shard in range(self._num_shards):
            path = data_filename(self._prefix, shard, self._num_shards)
            try:
                size = os.path.getsize(path)
            except OSError:
                raise CheckpointNotFoundError(
                    "Checkpoint data file %r is missing (index %r names %d shard(s))"
                    % (path, self._index_path, self._num_shards)) from None
            if size < needed.get(shard, 0):
                raise CheckpointError(
                    "Checkpoint data file %r is truncated: %d bytes, but the index needs %d"
                    % (path, size, needed[shard]))

    # -- queries ------------------------------------------------------------------
    @property
    def prefix(self):
        """The checkpoint prefix this reader reads."""
        return self._prefix

    def has_tensor(self, name):
        """Whether the checkpoint holds a tensor called ``name``."""
        return name in self._entries

    def get_variable_to_shape_map(self):
        """``{name: shape as a list of ints}`` for every tensor."""
        return {name: list(entry.shape) for name, entry in self._entries.items()}

    def get_variable_to_dtype_map(self):
        """``{name: numpy dtype}``; types numpy lacks (string, bfloat16, ...) map to ``object``."""
        return {name: _TF_TO_NP.get(entry.dtype_enum, np.dtype(object))
                for name, entry in self._entries.items()}

    def get_variable_to_tf_dtype_name_map(self):
        """``{name: TF dtype name}``, e.g. ``'float32'``, ``'string'``."""
        return {name: _TF_NAMES.get(entry.dtype_enum, "dtype_enum_%d" % entry.dtype_enum)
                for name, entry in self._entries.items()}

    def debug_string(self):
        """The bytes TF's ``CheckpointReader.debug_string()`` returns for this checkpoint.

        One ``key (DT_...) [d0,d1]`` line per index entry, in index order:
        partitioned tensors are skipped and the entries of their slices
        listed under their encoded keys, as TF's ``BundleReader`` prints them.
        """
        return b"".join(b"%s (%s) [%s]\n" % (key, _TF_ENUM_NAMES.get(entry.dtype_enum, "").encode(),
                                              ",".join(map(str, entry.shape)).encode())
                        for key, entry in self._keys if not entry.has_slices)

    def get_tensor(self, name):
        """Returns tensor ``name`` as a new, writable, native-endian ``np.ndarray``."""
        entry = self._entries.get(name)
        if entry is None:
            raise TensorNotFoundError("Key %s not found in checkpoint %r" % (name, self._index_path))
        if entry.has_slices:
            raise CheckpointError("Tensor %r in checkpoint %r is stored as partitioned slices, "
                                  "which sepconv does not read" % (name, self._index_path))
        dtype = _TF_TO_NP.get(entry.dtype_enum)
        if dtype is None:
            raise CheckpointError("Tensor %r in checkpoint %r has dtype %s, which sepconv does "
                                  "not read" % (name, self._index_path,
                                                _TF_NAMES.get(entry.dtype_enum, entry.dtype_enum)))
        path = data_filename(self._prefix, entry.shard_id, self._num_shards)
        count = 1
        for dim in entry.shape:
            count *= dim
        if entry.size != count * dtype.itemsize:
            raise CheckpointError(
                "Corrupt checkpoint index %r: tensor %r of shape %s and dtype %s has %d bytes, "
                "expected %d" % (self._index_path, name, list(entry.shape), dtype.name,
                                 entry.size, count * dtype.itemsize))
        stored = dtype.newbyteorder(self._byteorder) if dtype.itemsize > 1 else dtype
        try:
            out = np.empty(entry.shape, stored)
        except ValueError as e:  # a shape numpy cannot hold, e.g. [2**62, 0]
            raise CheckpointError("Corrupt checkpoint index %r: tensor %r has shape %s: %s"
                                  % (self._index_path, name, list(entry.shape), e)) from None
        flat = memoryview(out.reshape(-1).view(np.uint8))
        crc = 0
        try:
            with open(path, "rb") as f:
                f.seek(entry.offset)
                pos = 0
                while pos < entry.size:
                    chunk = f.read(min(_IO_CHUNK, entry.size - pos))
                    if not chunk:
                        raise CheckpointError(
                            "Checkpoint data file %r is truncated: tensor %r needs bytes [%d, %d)"
                            % (path, name, entry.offset, entry.offset + entry.size))
                    crc = google_crc32c.extend(crc, chunk)
                    flat[pos:pos + len(chunk)] = chunk
                    pos += len(chunk)
        except OSError as e:
            raise CheckpointError("Cannot read checkpoint data file %r: %s" % (path, e)) from e
        if _mask(crc) != entry.crc32c:
            raise CheckpointError(
                "Checksum mismatch for tensor %r in checkpoint data file %r (file corrupt, or "
                "it does not belong to index %r)" % (name, path, self._index_path))
        if dtype == np.bool_ and out.view(np.uint8).max(initial=0) > 1:
            raise CheckpointError("Corrupt bool tensor %r in %r" % (name, path))
        return out.astype(dtype.newbyteorder("="), copy=False)

    def __repr__(self):
        return "<BundleReader %r: %d tensors>" % (self._prefix, len(self._entries))


def _name(key):
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key.decode("latin-1")


def _slice_key_prefix(key):
    """How the index keys of tensor ``key``'s slices begin (TF's ``EncodeTensorNameSlice``).

    The key is written with ``OrderedCode``: the number 0 (one zero byte),
    then the name with 0x00 escaped as 00 ff and 0xff as ff 00, ended by 00 01.
    """
    return b"\x00" + _ORDERED_CODE_ESCAPE.sub(lambda m: _ORDERED_CODE_ESCAPES[m.group()], key) + b"\x00\x01"


_ORDERED_CODE_ESCAPE = re.compile(rb"[\x00\xff]")
_ORDERED_CODE_ESCAPES = {b"\x00": b"\x00\xff", b"\xff": b"\xff\x00"}


# --------------------------------------------------------------------------
# Bundle writer
# --------------------------------------------------------------------------


def _as_checkpoint_array(name, value):
    array = np.asarray(value)
    dtype = array.dtype
    if dtype.newbyteorder("=") not in _NP_TO_TF:
        raise ValueError("Cannot save tensor %r: dtype %s is not supported (supported: %s)"
                         % (name, dtype, ", ".join(sorted({d.name for d in _NP_TO_TF}))))
    # (np.ascontiguousarray would turn a 0-d array into shape [1])
    return np.asarray(array, dtype=dtype.newbyteorder("<"), order="C")


def _write_chunk(f, chunk):
    """Writes one chunk of tensor bytes (a module-level hook so tests can interrupt a save)."""
    f.write(chunk)


def write_bundle(prefix, tensors, *, sync=True, block_size=TABLE_BLOCK_SIZE):
    """Writes ``tensors`` (``{name: array}``) as a V2 checkpoint at ``prefix``; returns ``prefix``.

    The result is what TF's ``BundleWriter`` (hence ``Saver``) writes: keys
    sorted bytewise, tensors stored back to back in key order, one shard.

    Saving is atomic with respect to exceptions and, except for the instant
    between the two final renames, crashes: both files are written (and, with
    ``sync``, fsynced) under temporary names in the target directory, then
    renamed over ``<prefix>.data-00000-of-00001`` and ``<prefix>.index`` (data
    first, index last). A crash before the first rename leaves any previous
    checkpoint at ``prefix`` untouched (stray ``*.tmp`` files may remain); an
    exception between the renames puts the old data file back. Only a hard
    crash in the microseconds between the two renames can pair an old index
    with new data, which the reader then reports through its CRC checks
    rather than returning wrong values. Writing each save to a fresh prefix
    (``Saver.save(..., global_step=n)``) avoids even that.

    Args:
        prefix: the checkpoint prefix; its directory must exist.
        tensors: a mapping from tensor names to arrays (anything ``np.asarray``
            accepts) of a supported dtype.
        sync: fsync the files (and the directory) before/after renaming them.
        block_size: the index table's block size; TF's 256 KiB by default.

    Raises:
        ValueError: for an empty or non-string name, an unsupported dtype, or
            a missing directory.
    """
    prefix = os.fspath(prefix)
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            raise ValueError("Tensor names must be non-empty strings, got %r" % (name,))
        try:
            key = name.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("Tensor name %r is not valid Unicode" % (name,)) from None
        arrays[key] = (name, _as_checkpoint_array(name, value))
    keys = sorted(arrays)
    data_path = data_filename(prefix)
    index_path = index_filename(prefix)
    directory = os.path.dirname(prefix) or "."
    if not os.path.isdir(directory):
        raise ValueError("Parent directory of %s doesn't exist, can't save." % prefix)
    temps = []
    backup = None
    try:
        data_file, data_tmp = _temp_file(data_path)
        temps.append(data_tmp)
        items = [(HEADER_KEY, _encode_header())]
        offset = 0
        with data_file:
            for key in keys:
                name, array = arrays[key]
                raw = memoryview(array.reshape(-1).view(np.uint8))
                crc = 0
                for start in range(0, len(raw), _IO_CHUNK):
                    chunk = bytes(raw[start:start + _IO_CHUNK])
                    crc = google_crc32c.extend(crc, chunk)
                    _write_chunk(data_file, chunk)
                size = len(raw)
                items.append((key, _encode_entry(_NP_TO_TF[array.dtype.newbyteorder("=")],
                                                 array.shape, offset, size,
                                                 _mask(crc))))
                offset += size
            if sync:
                data_file.flush()
                os.fsync(data_file.fileno())
        index_file, index_tmp = _temp_file(index_path)
        temps.append(index_tmp)
        with index_file:
            index_file.write(_build_table(items, block_size))
            if sync:
                index_file.flush()
                os.fsync(index_file.fileno())
        if os.path.exists(data_path) and os.path.exists(index_path):
            # Keep the old data file reachable so an error between the two renames
            # can restore the previous checkpoint.
            backup = data_tmp + ".prev"
            try:
                os.link(data_path, backup)
            except OSError:
                backup = None
        os.replace(data_tmp, data_path)
        temps.remove(data_tmp)
        try:
            os.replace(index_tmp, index_path)
        except BaseException:
            if backup is not None:
                os.replace(backup, data_path)
                backup = None
            raise
        temps.remove(index_tmp)
    finally:
        for path in temps + ([backup] if backup else []):
            try:
                os.unlink(path)
            except OSError:
                pass
    if sync:
        _fsync_dir(directory)
    return prefix
