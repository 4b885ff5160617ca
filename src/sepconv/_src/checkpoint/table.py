"""LevelDB's SSTable layout, as TF's ``tensorflow/core/lib/io/table*``: writer and reader."""
import glob
import os
import struct

import google_crc32c

from .crc import _mask, _unmask_crc32c
from .proto import _DecodeError, _get_varint, _put_varint

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # 2 * BlockHandle::kMaxEncodedLength (20) + 8-byte magic


def v1_checkpoint_files(prefix):
    """The files of a TF V1 checkpoint at ``prefix`` (one per shard: tables, no index), or [].

    As for TF, a V1 prefix is a file name or a pattern (TF's ``checkpoint``
    file names a sharded one ``model.ckpt-?????-of-00002``); V1 files, like a
    V2 index, end in the table magic number.
    """
    candidates = [prefix] if os.path.isfile(prefix) else sorted(glob.glob(prefix))
    return [path for path in candidates if _ends_in_table_magic(path)]


def _ends_in_table_magic(path):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < FOOTER_SIZE:
                return False
            f.seek(-8, os.SEEK_END)
            return struct.unpack("<Q", f.read(8))[0] == TABLE_MAGIC
    except OSError:
        return False
BLOCK_TRAILER_SIZE = 5  # 1-byte compression type + 4-byte masked crc32c
NO_COMPRESSION = 0
TABLE_BLOCK_SIZE = 262144  # tensorflow/core/lib/io/table_options.h
BLOCK_RESTART_INTERVAL = 16


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
