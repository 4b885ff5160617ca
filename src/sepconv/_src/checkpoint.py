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
import os
import re
import struct

import google_crc32c
import numpy as np

__all__ = [
    "BundleReader", "CheckpointError", "CheckpointNotFoundError", "CheckpointState",
    "TensorNotFoundError", "checkpoint_exists", "data_filename", "get_checkpoint_state",
    "index_filename", "latest_checkpoint", "masked_crc32c", "resolve_checkpoint_path",
    "update_checkpoint_state", "write_bundle",
]

# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated or uses an unsupported feature."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint exists at the given prefix or directory."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class TensorNotFoundError(CheckpointError, KeyError):
    """The checkpoint has no tensor of the requested name."""

    def __str__(self):  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # 2 * BlockHandle::kMaxEncodedLength (20) + 8-byte magic
BLOCK_TRAILER_SIZE = 5  # 1-byte compression type + 4-byte masked crc32c
NO_COMPRESSION = 0
TABLE_BLOCK_SIZE = 262144  # tensorflow/core/lib/io/table_options.h
BLOCK_RESTART_INTERVAL = 16
TENSOR_BUNDLE_VERSION = 1  # kTensorBundleVersion
HEADER_KEY = b""
_MASK_DELTA = 0xA282EAD8
_IO_CHUNK = 1 << 22

# tensorflow/core/framework/types.proto DataType values -> numpy.
_TF_TO_NP = {
    1: np.dtype(np.float32), 2: np.dtype(np.float64), 3: np.dtype(np.int32),
    4: np.dtype(np.uint8), 5: np.dtype(np.int16), 6: np.dtype(np.int8),
    8: np.dtype(np.complex64), 9: np.dtype(np.int64), 10: np.dtype(np.bool_),
    17: np.dtype(np.uint16), 18: np.dtype(np.complex128), 19: np.dtype(np.float16),
    22: np.dtype(np.uint32), 23: np.dtype(np.uint64),
}
_NP_TO_TF = {dt: enum for enum, dt in _TF_TO_NP.items()}
# Data types sepconv knows by name but cannot turn into numpy arrays.
_TF_UNSUPPORTED = {
    7: "string", 11: "qint8", 12: "quint8", 13: "qint32", 14: "bfloat16", 15: "qint16",
    16: "quint16", 20: "resource", 21: "variant",
}
_TF_NAMES = {enum: dt.name for enum, dt in _TF_TO_NP.items()}
_TF_NAMES.update(_TF_UNSUPPORTED)


def _mask(crc):
    """TF's ``crc32c::Mask``: rotate right by 15 bits and add a constant."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def masked_crc32c(data):
    """TF's ``crc32c::Mask(crc32c::Value(data))``."""
    return _mask(google_crc32c.value(bytes(data)))


def _unmask_crc32c(masked):
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def index_filename(prefix):
    """``<prefix>.index``."""
    return os.fspath(prefix) + ".index"


def data_filename(prefix, shard=0, num_shards=1):
    """``<prefix>.data-<shard>-of-<num_shards>``, as TF's ``DataFilename``."""
    return "%s.data-%05d-of-%05d" % (os.fspath(prefix), shard, num_shards)


# --------------------------------------------------------------------------
# Varints and the few protobuf messages
# --------------------------------------------------------------------------


class _DecodeError(Exception):
    """Internal: malformed bytes; turned into a CheckpointError naming the file."""


def _put_varint(out, value):
    if value < 0:
        value += 1 << 64
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _get_varint(buf, pos, limit=None):
    limit = len(buf) if limit is None else limit
    result = shift = 0
    while True:
        if pos >= limit:
            raise _DecodeError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _DecodeError("varint too long")


def _parse_proto(buf):
    """Decodes one protobuf message into ``{field_number: [values]}``.

    Varint and fixed values become ints, length-delimited ones bytes.
    """
    fields = {}
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _get_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _DecodeError("invalid protobuf field number 0")
        if wire == 0:
            value, pos = _get_varint(buf, pos)
        elif wire == 1:
            if pos + 8 > end:
                raise _DecodeError("truncated fixed64")
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _get_varint(buf, pos)
            if pos + length > end:
                raise _DecodeError("truncated length-delimited field")
            value = bytes(buf[pos:pos + length])
            pos += length
        elif wire == 5:
            if pos + 4 > end:
                raise _DecodeError("truncated fixed32")
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise _DecodeError("unsupported protobuf wire type %d" % wire)
        fields.setdefault(number, []).append(value)
    return fields


def _last(fields, number, default=0):
    values = fields.get(number)
    return values[-1] if values else default


def _signed64(value):
    return value - (1 << 64) if value >= 1 << 63 else value


def _encode_header():
    """BundleHeaderProto{num_shards: 1, endianness: LITTLE, version{producer: 1}}."""
    version = bytearray()
    _put_varint(version, 0x08)  # VersionDef.producer
    _put_varint(version, TENSOR_BUNDLE_VERSION)
    out = bytearray([0x08, 1])  # num_shards = 1; endianness LITTLE (0) is omitted
    out.append(0x1A)  # version, length-delimited
    _put_varint(out, len(version))
    out += version
    return bytes(out)


def _encode_entry(dtype_enum, shape, offset, size, masked_crc):
    """BundleEntryProto in field order, proto3 defaults omitted (as TF writes it)."""
    shape_proto = bytearray()
    for dim in shape:
        dim_proto = bytearray()
        if dim:
            dim_proto.append(0x08)  # Dim.size
            _put_varint(dim_proto, dim)
        shape_proto.append(0x12)  # TensorShapeProto.dim
        _put_varint(shape_proto, len(dim_proto))
        shape_proto += dim_proto
    out = bytearray()
    out.append(0x08)  # dtype
    _put_varint(out, dtype_enum)
    out.append(0x12)  # shape (always present: TF sets it)
    _put_varint(out, len(shape_proto))
    out += shape_proto
    # shard_id (3) is 0: omitted.
    if offset:
        out.append(0x20)
        _put_varint(out, offset)
    if size:
        out.append(0x28)
        _put_varint(out, size)
    if masked_crc:
        out.append(0x35)  # fixed32
        out += struct.pack("<I", masked_crc)
    return bytes(out)


class _Entry:
    """A decoded BundleEntryProto."""

    __slots__ = ("dtype_enum", "shape", "shard_id", "offset", "size", "crc32c", "has_slices")

    @classmethod
    def decode(cls, buf):
        fields = _parse_proto(buf)
        self = cls()
        self.dtype_enum = _last(fields, 1)
        shape_fields = _parse_proto(_last(fields, 2, b""))
        if _last(shape_fields, 3):
            raise _DecodeError("tensor shape has unknown rank")
        self.shape = tuple(_signed64(_last(_parse_proto(dim), 1)) for dim in shape_fields.get(2, ()))
        if any(d < 0 for d in self.shape):
            raise _DecodeError("tensor shape %s is not fully defined" % (self.shape,))
        self.shard_id = _last(fields, 3)
        self.offset = _last(fields, 4)
        self.size = _last(fields, 5)
        self.crc32c = _last(fields, 6)
        self.has_slices = bool(fields.get(7))
        return self


# --------------------------------------------------------------------------
# SSTable (LevelDB table) writer
# --------------------------------------------------------------------------


class _BlockBuilder:
    def __init__(self, restart_interval):
        self.restart_interval = restart_interval
        self.reset()

    def reset(self):
        self.buffer = bytearray()
        self.restarts = [0]
        self.counter = 0
        self.last_key = b""

    def empty(self):
        return not self.buffer

    def add(self, key, value):
        shared = 0
        if self.counter < self.restart_interval:
            limit = min(len(self.last_key), len(key))
            while shared < limit and self.last_key[shared] == key[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buffer))
            self.counter = 0
        _put_varint(self.buffer, shared)
        _put_varint(self.buffer, len(key) - shared)
        _put_varint(self.buffer, len(value))
        self.buffer += key[shared:]
        self.buffer += value
        self.last_key = key
        self.counter += 1

    def size_estimate(self):
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def finish(self):
        out = bytearray(self.buffer)
        for restart in self.restarts:
            out += struct.pack("<I", restart)
        out += struct.pack("<I", len(self.restarts))
        return bytes(out)


def _shortest_separator(start, limit):
    """TF's ``FindShortestSeparator``: a short key in [start, limit)."""
    n = min(len(start), len(limit))
    i = 0
    while i < n and start[i] == limit[i]:
        i += 1
    if i < n:
        byte = start[i]
        if byte < 0xFF and byte + 1 < limit[i]:
            return start[:i] + bytes([byte + 1])
    return start


def _short_successor(key):
    """TF's ``FindShortSuccessor``: a short key >= ``key``."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def _encode_handle(offset, size):
    out = bytearray()
    _put_varint(out, offset)
    _put_varint(out, size)
    return bytes(out)


def _build_table(items, block_size=TABLE_BLOCK_SIZE, restart_interval=BLOCK_RESTART_INTERVAL):
    """Serializes sorted ``(key, value)`` byte pairs as TF's ``table::TableBuilder``."""
    out = bytearray()
    data_block = _BlockBuilder(restart_interval)
    index_block = _BlockBuilder(1)
    pending = None  # (last_key, handle) of a flushed block awaiting its index entry

    def write_block(block):
        contents = block.finish()
        handle = _encode_handle(len(out), len(contents))
        out.extend(contents)
        trailer = bytes([NO_COMPRESSION])
        crc = google_crc32c.extend(google_crc32c.value(contents), trailer)
        out.extend(trailer + struct.pack("<I", _mask(crc)))
        block.reset()
        return handle

    last_key = None
    for key, value in items:
        if last_key is not None and key <= last_key:
            raise ValueError("keys must be unique and sorted: %r after %r" % (key, last_key))
        if pending is not None:
            index_block.add(_shortest_separator(pending[0], key), pending[1])
            pending = None
        data_block.add(key, value)
        last_key = key
        if data_block.size_estimate() >= block_size:
            pending = (last_key, write_block(data_block))
    if not data_block.empty():
        pending = (last_key, write_block(data_block))
    metaindex_handle = write_block(_BlockBuilder(restart_interval))
    if pending is not None:
        index_block.add(_short_successor(pending[0]), pending[1])
    index_handle = write_block(index_block)
    footer = bytearray(metaindex_handle + index_handle)
    footer += bytes(40 - len(footer))
    footer += struct.pack("<Q", TABLE_MAGIC)
    out += footer
    return bytes(out)


# --------------------------------------------------------------------------
# SSTable reader
# --------------------------------------------------------------------------


def _decode_handle(buf, pos=0):
    offset, pos = _get_varint(buf, pos)
    size, pos = _get_varint(buf, pos)
    return offset, size, pos


def _read_block(table, offset, size, what):
    end = offset + size + BLOCK_TRAILER_SIZE
    if end > len(table) - FOOTER_SIZE:
        raise _DecodeError("%s block [%d, %d) lies beyond the end of the table (file truncated?)"
                           % (what, offset, end))
    contents = bytes(table[offset:offset + size])
    trailer = bytes(table[offset + size:end])
    expected = _unmask_crc32c(struct.unpack("<I", trailer[1:])[0])
    actual = google_crc32c.extend(google_crc32c.value(contents), trailer[:1])
    if actual != expected:
        raise _DecodeError("checksum mismatch in %s block at offset %d (file corrupt)" % (what, offset))
    if trailer[0] != NO_COMPRESSION:
        raise _DecodeError("%s block at offset %d uses compression type %d; only uncompressed "
                           "tables are supported" % (what, offset, trailer[0]))
    return contents


def _block_entries(block, what):
    if len(block) < 4:
        raise _DecodeError("%s block too short" % what)
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * num_restarts
    if num_restarts < 1 or limit < 0:
        raise _DecodeError("%s block has a bad restart array" % what)
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _get_varint(block, pos, limit)
        non_shared, pos = _get_varint(block, pos, limit)
        value_len, pos = _get_varint(block, pos, limit)
        if shared > len(key) or pos + non_shared + value_len > limit:
            raise _DecodeError("%s block has a malformed entry" % what)
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        yield key, block[pos:pos + value_len]
        pos += value_len


def _read_table(table):
    """Returns the sorted ``[(key, value)]`` of a serialized SSTable."""
    if len(table) < FOOTER_SIZE:
        raise _DecodeError("file is too short (%d bytes) to be a checkpoint index" % len(table))
    footer = table[-FOOTER_SIZE:]
    magic = struct.unpack_from("<Q", footer, 40)[0]
    if magic != TABLE_MAGIC:
        raise _DecodeError("bad table magic number 0x%016x (not a TF checkpoint index, or truncated)"
                           % magic)
    meta_offset, meta_size, pos = _decode_handle(footer)
    index_offset, index_size, _ = _decode_handle(footer, pos)
    # The metaindex block is empty in TF's tables; it is checked, not used.
    _read_block(table, meta_offset, meta_size, "metaindex")
    index = _read_block(table, index_offset, index_size, "index")
    items = []
    for _, handle in _block_entries(index, "index"):
        offset, size, _ = _decode_handle(handle)
        block = _read_block(table, offset, size, "data")
        for key, value in _block_entries(block, "data"):
            if items and key <= items[-1][0]:
                raise _DecodeError("keys out of order (file corrupt)")
            items.append((key, value))
    return items


# --------------------------------------------------------------------------
# Bundle reader
# --------------------------------------------------------------------------


class BundleReader:
    """Reads a V2 checkpoint (``<prefix>.index`` + ``<prefix>.data-*``), like TF's ``CheckpointReader``.

    The index is read and checked (block CRCs, key order, header version) when
    the reader is made; each tensor's bytes are checked against their CRC32C
    when read. Any problem raises :class:`CheckpointError` naming the file.

    Example:
        >>> reader = BundleReader("/tmp/model.ckpt-10")     # doctest: +SKIP
        >>> reader.get_variable_to_shape_map()              # doctest: +SKIP
        {'conv/weights': [3, 3, 8, 16], ...}
    """

    def __init__(self, prefix):
        self._prefix = os.fspath(prefix)
        self._index_path = index_filename(self._prefix)
        try:
            with open(self._index_path, "rb") as f:
                table = f.read()
        except FileNotFoundError:
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
        self._entries = {}
        for key, value in items[1:]:
            try:
                name = bytes(key).decode("utf-8")
            except UnicodeDecodeError:
                name = bytes(key).decode("latin-1")
            entry = _Entry.decode(value)
            if not entry.has_slices and entry.shard_id >= self._num_shards:
                raise _DecodeError("tensor %r is in shard %d of %d" % (name, entry.shard_id,
                                                                         self._num_shards))
            self._entries[name] = entry

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
        """One ``name (dtype) [shape]`` line per tensor, sorted, as TF's reader prints."""
        names = self.get_variable_to_tf_dtype_name_map()
        return "".join("%s (%s) %s\n" % (n, names[n], list(self._entries[n].shape))
                       for n in sorted(self._entries))

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
        out = np.empty(entry.shape, stored)
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


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_file(final_path):
    """Opens a new ``<final_path>.<random>.tmp`` for writing (mode 0666 less the umask,
    as a plain ``open`` would give, unlike ``mkstemp``'s 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = "%s.%s.tmp" % (final_path, os.urandom(6).hex())
        try:
            fd = os.open(path, flags, 0o666)
        except FileExistsError:
            continue
        return os.fdopen(fd, "wb"), path
    raise FileExistsError("could not create a temporary file next to %r" % final_path)


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


# --------------------------------------------------------------------------
# The `checkpoint` state file and path resolution
# --------------------------------------------------------------------------

_STATE_LINE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.*?)\s*$")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "'": "'", "\\": "\\", "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "?": "?"}


def _text_unescape(quoted, path):
    """Decodes one C-escaped text-format string literal (as ``text_format`` writes)."""
    quote = quoted[:1]
    if quote not in ("'", '"') or len(quoted) < 2 or quoted[-1] != quote:
        raise CheckpointError("Malformed checkpoint state file %r: expected a quoted string, "
                              "got %s" % (path, quoted))
    body, out, i = quoted[1:-1], bytearray(), 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        nxt = body[i + 1:i + 2]
        if nxt in _ESCAPES:
            out += _ESCAPES[nxt].encode()
            i += 2
        elif nxt and nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i + 1:]).group(0)
            out.append(int(digits, 8) & 0xFF)
            i += 1 + len(digits)
        elif nxt in ("x", "X"):
            digits = re.match(r"[0-9A-Fa-f]{1,2}", body[i + 2:])
            if not digits:
                raise CheckpointError("Malformed escape in checkpoint state file %r" % path)
            out.append(int(digits.group(0), 16))
            i += 2 + len(digits.group(0))
        else:
            raise CheckpointError("Malformed escape in checkpoint state file %r" % path)
    return out.decode("utf-8", errors="surrogateescape")


def _text_escape(value):
    """Quotes a string as protobuf's ``text_format.MessageToString`` does in the protobuf
    that TF 2.21 uses: tab, newline, CR, both quotes and backslash are escaped; all other
    characters, non-ASCII included, are written as UTF-8."""
    return '"' + value.translate(_TEXT_ESCAPES) + '"'


_TEXT_ESCAPES = {9: r"\t", 10: r"\n", 13: r"\r", 34: r"\"", 39: r"\'", 92: "\\\\"}


class CheckpointState:
    """TF's ``CheckpointState`` proto: the contents of a ``checkpoint`` file.

    Attributes:
        model_checkpoint_path: prefix of the latest checkpoint.
        all_model_checkpoint_paths: prefixes of the kept checkpoints, oldest first.
    """

    def __init__(self, model_checkpoint_path="", all_model_checkpoint_paths=()):
        self.model_checkpoint_path = model_checkpoint_path
        self.all_model_checkpoint_paths = list(all_model_checkpoint_paths)

    def __repr__(self):
        return "CheckpointState(model_checkpoint_path=%r, all_model_checkpoint_paths=%r)" % (
            self.model_checkpoint_path, self.all_model_checkpoint_paths)

    def to_text(self):
        """The text-format serialization, as ``text_format.MessageToString`` writes it."""
        lines = ["model_checkpoint_path: %s\n" % _text_escape(self.model_checkpoint_path)]
        lines += ["all_model_checkpoint_paths: %s\n" % _text_escape(p)
                  for p in self.all_model_checkpoint_paths]
        return "".join(lines)

    @classmethod
    def from_text(cls, text, path="<string>"):
        """Parses the text format; unknown fields (e.g. timestamps) are ignored."""
        state = cls()
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            match = _STATE_LINE.match(line)
            if not match:
                raise CheckpointError("Malformed checkpoint state file %r: %r" % (path, line))
            field, value = match.groups()
            if field == "model_checkpoint_path":
                state.model_checkpoint_path = _text_unescape(value, path)
            elif field == "all_model_checkpoint_paths":
                state.all_model_checkpoint_paths.append(_text_unescape(value, path))
        return state


def _state_filename(checkpoint_dir, latest_filename=None):
    return os.path.join(os.fspath(checkpoint_dir), latest_filename or "checkpoint")


def get_checkpoint_state(checkpoint_dir, latest_filename=None):
    """Reads ``<checkpoint_dir>/checkpoint``; relative paths are joined to the directory.

    Returns:
        A :class:`CheckpointState`, or ``None`` if there is no state file.

    Raises:
        CheckpointError: if the file is malformed or names no checkpoint.
    """
    checkpoint_dir = os.fspath(checkpoint_dir)
    path = _state_filename(checkpoint_dir, latest_filename)
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return None
    state = CheckpointState.from_text(text, path)
    if not state.model_checkpoint_path:
        raise CheckpointError("Invalid checkpoint state loaded from " + checkpoint_dir)
    if not os.path.isabs(state.model_checkpoint_path):
        state.model_checkpoint_path = os.path.join(checkpoint_dir, state.model_checkpoint_path)
    state.all_model_checkpoint_paths = [
        p if os.path.isabs(p) else os.path.join(checkpoint_dir, p)
        for p in state.all_model_checkpoint_paths]
    return state


def update_checkpoint_state(save_dir, model_checkpoint_path, all_model_checkpoint_paths=None,
                            latest_filename=None, save_relative_paths=False):
    """Atomically writes ``<save_dir>/checkpoint``, as TF's ``update_checkpoint_state_internal``.

    As TF does: ``model_checkpoint_path`` is appended to
    ``all_model_checkpoint_paths`` unless it is already its last item; with
    ``save_relative_paths`` absolute paths are made relative to ``save_dir``;
    otherwise paths are written as given when ``save_dir`` is absolute, and
    relative to ``save_dir`` when ``save_dir`` and the path are both relative.
    The text is byte-for-byte what TF writes.
    """
    save_dir = os.fspath(save_dir) or "."
    model_checkpoint_path = os.fspath(model_checkpoint_path)
    paths = [os.fspath(p) for p in all_model_checkpoint_paths or []]
    if save_relative_paths:
        def rel_abs(p):
            return os.path.relpath(p, save_dir) if os.path.isabs(p) else p
        model_checkpoint_path = rel_abs(model_checkpoint_path)
        paths = [rel_abs(p) for p in paths]
    if not paths or paths[-1] != model_checkpoint_path:
        paths.append(model_checkpoint_path)
    if not os.path.isabs(save_dir):
        def rel(p):
            return p if os.path.isabs(p) else os.path.relpath(p, save_dir)
        model_checkpoint_path = rel(model_checkpoint_path)
        paths = [rel(p) for p in paths]
    path = _state_filename(save_dir, latest_filename)
    if os.path.normpath(path) == os.path.normpath(os.path.join(save_dir, model_checkpoint_path)):
        raise RuntimeError("Save path '%s' conflicts with path used for checkpoint state.  "
                           "Please use a different save path." % model_checkpoint_path)
    text = CheckpointState(model_checkpoint_path, paths).to_text()
    f, tmp = _temp_file(path)
    try:
        with f:
            f.write(text.encode("utf-8", errors="surrogateescape"))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def checkpoint_exists(prefix):
    """Whether a V2 checkpoint index exists at ``prefix``."""
    return os.path.isfile(index_filename(prefix))


def latest_checkpoint(checkpoint_dir, latest_filename=None):
    """The prefix named by ``<checkpoint_dir>/checkpoint`` if its index exists, else ``None``."""
    state = get_checkpoint_state(checkpoint_dir, latest_filename)
    if state and state.model_checkpoint_path and checkpoint_exists(state.model_checkpoint_path):
        return state.model_checkpoint_path
    return None


def resolve_checkpoint_path(ckpt_dir_or_file):
    """A directory resolves to its latest checkpoint; anything else is taken as a prefix.

    Raises:
        CheckpointNotFoundError: if a directory holds no (existing) latest checkpoint.
    """
    path = os.fspath(ckpt_dir_or_file)
    if os.path.isdir(path):
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointNotFoundError(
                "Couldn't find 'checkpoint' file or checkpoints in given directory %s" % path)
        return latest
    return path
