"""TF V2 checkpoint bundles (sepconv._src.checkpoint): TF fixtures, round trips, corruption, atomicity."""
import json
import os
import pathlib
import signal
import struct
import subprocess
import sys
import textwrap
import threading

import google_crc32c
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sepconv._src import checkpoint as ck
from sepconv._src.checkpoint.bundle import _slice_key_prefix
from sepconv._src.checkpoint.crc import _mask, _unmask_crc32c
from sepconv._src.checkpoint.dtypes import _NP_TO_TF
from sepconv._src.checkpoint.proto import _encode_entry, _encode_header
from sepconv._src.checkpoint.table import (FOOTER_SIZE, TABLE_BLOCK_SIZE, _block_entries, _build_table,
                                           _decode_handle)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
TF_DIR = FIXTURES / "ckpt_tf"
TF_PREFIX = str(TF_DIR / "model.ckpt")
CHECKPOINT_PACKAGE = pathlib.Path(ck.__file__).parent


def expected_tensors():
    with np.load(TF_DIR / "expected.npz") as z:
        return {k: z[k] for k in z.files}


def same(a, b):
    """Equal dtype, shape and bytes (so NaN == NaN and -0.0 != 0.0)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def read_all(prefix):
    reader = ck.BundleReader(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def sample_tensors(version=0):
    rng = np.random.RandomState(version)
    return {
        "a/w": rng.randn(4, 3).astype(np.float32),
        "a/b": np.arange(5, dtype=np.int64) + version,
        "flag": np.array(version % 2 == 0),
        "half": rng.randn(7).astype(np.float16),
    }


def data_blocks(index_path):
    """Number of data blocks of an index table, from its index block."""
    table = pathlib.Path(index_path).read_bytes()
    footer = table[-FOOTER_SIZE:]
    _, _, pos = _decode_handle(footer)
    offset, size, _ = _decode_handle(footer, pos)
    return sum(1 for _ in _block_entries(table[offset:offset + size], "index"))


# ---------------------------------------------------------------------------
# TF-written fixtures (tools/gen_checkpoints.py, tf.compat.v1.train.Saver, TF 2.21)
# ---------------------------------------------------------------------------

def test_reads_tf_fixture_exactly():
    expected = expected_tensors()
    meta = json.loads((TF_DIR / "expected.json").read_text())["variables"]
    reader = ck.BundleReader(TF_PREFIX)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    assert len(expected) > 100
    assert sorted(shapes) == sorted(expected) == sorted(meta)
    for name, value in expected.items():
        assert shapes[name] == meta[name]["shape"] == list(value.shape), name
        assert dtypes[name] == value.dtype, name
        assert reader.get_variable_to_tf_dtype_name_map()[name] == meta[name]["dtype"]
        assert reader.has_tensor(name)
        got = reader.get_tensor(name)
        assert same(got, value), name
        assert got.flags.writeable and got.dtype.isnative
    assert not reader.has_tensor("missing")
    assert reader.get_tensor("shapes/scalar").shape == ()
    assert reader.get_tensor("shapes/empty_middle").shape == (3, 0, 2)
    assert reader.debug_string() == (TF_DIR / "debug_string.bin").read_bytes()


def test_writer_matches_tf_bytes(tmp_path):
    prefix = str(tmp_path / "model.ckpt")
    ck.write_bundle(prefix, expected_tensors())
    for suffix in (".index", ".data-00000-of-00001"):
        assert pathlib.Path(prefix + suffix).read_bytes() == pathlib.Path(TF_PREFIX + suffix).read_bytes()


def test_tf_checkpoint_state_file_resolves():
    assert ck.latest_checkpoint(TF_DIR) == TF_PREFIX
    assert ck.resolve_checkpoint_path(TF_DIR) == TF_PREFIX
    state = ck.get_checkpoint_state(TF_DIR)
    assert state.all_model_checkpoint_paths == [TF_PREFIX]


@pytest.mark.parametrize("directory, prefix", [
    ("ckpt_tf_v1", "model.ckpt"), ("ckpt_tf_v1/sharded", "model.ckpt-?????-of-00001")])
def test_a_tf_v1_checkpoint_is_found_as_tf_finds_it_and_refused_clearly(directory, prefix):
    import sepconv as sc
    directory = FIXTURES / directory
    expected = str(directory / prefix)
    assert ck.latest_checkpoint(directory) == expected and ck.checkpoint_exists(expected)
    message = rf"{expected.replace('?', '.')} is a TF V1 checkpoint .* restore it with tf.compat.v1.train.Saver"
    for read in (lambda: ck.BundleReader(expected), lambda: sc.train.list_variables(directory),
                 lambda: sc.nn.SeparableConv2d(4, 3, 1).load_tf_checkpoint(directory, strict=False)):
        with pytest.raises(ck.CheckpointError, match=message):
            read()


def test_tf_string_and_partitioned_tensors_are_listed_as_tf_lists_them():
    directory = FIXTURES / "ckpt_tf_strings"
    reader = ck.BundleReader(directory / "model.ckpt")
    tf_listing = json.loads((directory / "expected.json").read_text())
    assert reader.get_variable_to_shape_map() == tf_listing["shapes"]
    assert reader.get_variable_to_tf_dtype_name_map() == tf_listing["dtypes"]
    assert sorted(tf_listing["shapes"]) == ["part/w", "strings/s", "x"]
    assert reader.get_variable_to_dtype_map()["strings/s"] == np.dtype(object)
    assert reader.debug_string() == (directory / "debug_string.bin").read_bytes()
    np.testing.assert_array_equal(reader.get_tensor("x"), np.arange(3, dtype=np.float32))
    with pytest.raises(ck.CheckpointError, match=r"'strings/s'.*dtype string.*not read"):
        reader.get_tensor("strings/s")
    with pytest.raises(ck.CheckpointError, match=r"'part/w'.*partitioned slices.*not read"):
        reader.get_tensor("part/w")
    # The slices' own index entries (keys "\x00part/w\x00\x01...") are no tensors.
    slice_key = reader.debug_string().split(b" ")[0].decode("latin-1")
    assert slice_key.startswith("\x00part/w\x00\x01")
    assert not reader.has_tensor(slice_key)
    with pytest.raises(ck.TensorNotFoundError):
        reader.get_tensor(slice_key)


def test_slice_key_prefix_escapes_as_ordered_code():
    assert _slice_key_prefix(b"a\x00b\xffc") == b"\x00a\x00\xffb\xff\x00c\x00\x01"


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------

DTYPES = [np.float16, np.float32, np.float64, np.int8, np.uint8, np.int16, np.uint16, np.int32,
          np.uint32, np.int64, np.uint64, np.bool_, np.complex64, np.complex128]


@st.composite
def tensor_dicts(draw):
    names = draw(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6, unique=True))
    out = {}
    for name in names:
        dtype = draw(st.sampled_from(DTYPES))
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
        out[name] = draw(hnp.arrays(dtype, shape))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tensors=tensor_dicts(), block_size=st.sampled_from([64, 256, TABLE_BLOCK_SIZE]),
       big_endian=st.booleans())
def test_write_read_round_trip(tmp_path_factory, tensors, block_size, big_endian):
    prefix = str(tmp_path_factory.mktemp("rt") / "ckpt")
    if big_endian:  # non-native input byte order is converted to TF's little-endian
        tensors = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in tensors.items()}
    assert ck.write_bundle(prefix, tensors, sync=False, block_size=block_size) == prefix
    reader = ck.BundleReader(prefix)
    assert reader.get_variable_to_shape_map() == {k: list(v.shape) for k, v in tensors.items()}
    for name, value in tensors.items():
        assert reader.get_variable_to_dtype_map()[name] == value.dtype.newbyteorder("=")
        got = reader.get_tensor(name)
        assert got.dtype == value.dtype.newbyteorder("=") and got.shape == value.shape
        assert got.tobytes() == value.astype(got.dtype).tobytes()


def test_multi_block_index(tmp_path):
    tensors = {"v%04d/%s" % (i, "x" * (i % 7)): np.full((i % 3,), i, np.float32) for i in range(300)}
    prefix = str(tmp_path / "many")
    ck.write_bundle(prefix, tensors, block_size=512)
    assert data_blocks(prefix + ".index") > 10
    got = read_all(prefix)
    assert sorted(got) == sorted(tensors)
    assert all(same(got[k], tensors[k]) for k in tensors)


def test_writer_accepts_scalars_and_lists(tmp_path):
    prefix = str(tmp_path / "c")
    ck.write_bundle(prefix, {"f": 1.5, "i": 3, "l": [[1, 2]], "b": True})
    got = read_all(prefix)
    assert got["f"].shape == () and got["f"].dtype == np.float64 and got["f"] == 1.5
    assert got["i"].dtype == np.int64 and got["l"].shape == (1, 2) and got["b"].dtype == np.bool_


@pytest.mark.parametrize("tensors, match", [
    ({"": np.zeros(2)}, "non-empty strings"),
    ({3: np.zeros(2)}, "non-empty strings"),
    ({"s": np.array(["a", "b"])}, "'s'.*not supported"),
    ({"o": np.array([object()])}, "'o'.*not supported"),
    ({"\ud800": np.zeros(1)}, "not valid Unicode"),
])
def test_writer_rejects_bad_input_before_writing(tmp_path, tensors, match):
    with pytest.raises(ValueError, match=match):
        ck.write_bundle(str(tmp_path / "x"), tensors)
    assert list(tmp_path.iterdir()) == []


def test_writer_needs_existing_directory(tmp_path):
    with pytest.raises(ValueError, match="Parent directory of .*nodir/x doesn't exist"):
        ck.write_bundle(str(tmp_path / "nodir" / "x"), {"a": np.zeros(1)})


def test_files_get_normal_permissions(tmp_path):
    prefix = str(tmp_path / "p")
    ck.write_bundle(prefix, {"a": np.zeros(1)})
    umask = os.umask(0)
    os.umask(umask)
    for suffix in (".index", ".data-00000-of-00001"):
        assert os.stat(prefix + suffix).st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------------------
# Missing and corrupt files
# ---------------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    prefix = str(tmp_path / "model")
    ck.write_bundle(prefix, sample_tensors())
    return prefix


def _rewrite(path, transform):
    data = bytearray(pathlib.Path(path).read_bytes())
    pathlib.Path(path).write_bytes(bytes(transform(data)))


def _flip(position, bit=0):
    def transform(data):
        data[position] ^= 1 << bit
        return data
    return transform


def test_missing_files(saved, tmp_path):
    with pytest.raises(ck.CheckpointNotFoundError, match=r"index file '.*nothere\.index' does not exist"):
        ck.BundleReader(str(tmp_path / "nothere"))
    os.remove(saved + ".data-00000-of-00001")
    with pytest.raises(ck.CheckpointNotFoundError, match=r"data file '.*model\.data-00000-of-00001' is missing"):
        ck.BundleReader(saved)
    assert issubclass(ck.CheckpointNotFoundError, ValueError)
    assert issubclass(ck.CheckpointNotFoundError, FileNotFoundError)


def test_missing_tensor(saved):
    with pytest.raises(ck.TensorNotFoundError, match=r"^Key nope not found in checkpoint '.*model\.index'$"):
        ck.BundleReader(saved).get_tensor("nope")
    assert issubclass(ck.TensorNotFoundError, KeyError) and issubclass(ck.TensorNotFoundError, ValueError)


def test_truncated_index(saved):
    index = saved + ".index"
    size = os.path.getsize(index)
    _rewrite(index, lambda d: d[:size - 7])
    with pytest.raises(ck.CheckpointError, match=r"Corrupt checkpoint index '.*model\.index': bad table magic"):
        ck.BundleReader(saved)
    _rewrite(index, lambda d: d[:20])
    with pytest.raises(ck.CheckpointError, match=r"Corrupt checkpoint index '.*model\.index': file is too short"):
        ck.BundleReader(saved)
    _rewrite(index, lambda d: d[:0])
    with pytest.raises(ck.CheckpointError, match=r"'.*model\.index'"):
        ck.BundleReader(saved)


def test_index_with_bytes_cut_from_the_middle(saved):
    # Removing bytes but keeping the footer: handles now point past the blocks.
    index = saved + ".index"
    _rewrite(index, lambda d: d[:10] + d[30:])
    with pytest.raises(ck.CheckpointError, match=r"Corrupt checkpoint index '.*model\.index'"):
        ck.BundleReader(saved)


def test_truncated_data(saved):
    data = saved + ".data-00000-of-00001"
    size = os.path.getsize(data)
    _rewrite(data, lambda d: d[:size - 1])
    with pytest.raises(ck.CheckpointError,
                       match=r"data file '.*model\.data-00000-of-00001' is truncated: %d bytes, but the "
                             r"index needs %d" % (size - 1, size)):
        ck.BundleReader(saved)


def test_data_truncated_after_opening(saved):
    reader = ck.BundleReader(saved)
    _rewrite(saved + ".data-00000-of-00001", lambda d: d[:8])
    with pytest.raises(ck.CheckpointError, match=r"data file '.*model\.data-00000-of-00001' is truncated"):
        for name in sorted(reader.get_variable_to_shape_map()):
            reader.get_tensor(name)


def test_flipped_bit_in_data(saved):
    data = saved + ".data-00000-of-00001"
    size = os.path.getsize(data)
    for position in range(size):
        _rewrite(data, _flip(position, position % 8))
        reader = ck.BundleReader(saved)  # the index is intact
        with pytest.raises(ck.CheckpointError,
                           match=r"Checksum mismatch for tensor '.*' in checkpoint data file "
                                 r"'.*model\.data-00000-of-00001'"):
            for name in reader.get_variable_to_shape_map():
                reader.get_tensor(name)
        _rewrite(data, _flip(position, position % 8))
    assert all(same(v, sample_tensors()[k]) for k, v in read_all(saved).items())


def test_flipped_bit_in_index_data_block(saved):
    _rewrite(saved + ".index", _flip(12, 3))
    with pytest.raises(ck.CheckpointError,
                       match=r"Corrupt checkpoint index '.*model\.index': checksum mismatch in data block"):
        ck.BundleReader(saved)


def test_every_bit_flip_in_index_is_caught_or_harmless(saved):
    """Flipping a bit anywhere in the index raises CheckpointError, except in the footer's
    padding after the two block handles, which nothing reads (nor does TF)."""
    index = saved + ".index"
    original = pathlib.Path(index).read_bytes()
    expected = read_all(saved)
    harmless = 0
    for position in range(len(original)):
        for bit in (position % 8, 7 - position % 8):
            corrupt = bytearray(original)
            corrupt[position] ^= 1 << bit
            pathlib.Path(index).write_bytes(bytes(corrupt))
            try:
                got = read_all(saved)
            except ck.CheckpointError as e:
                assert "model.index" in str(e) or "model.data" in str(e)
                continue
            footer = original[-FOOTER_SIZE:]
            _, _, pos = _decode_handle(footer)
            _, _, handles_end = _decode_handle(footer, pos)
            assert len(original) - FOOTER_SIZE + handles_end <= position < len(original) - 8, \
                (position, bit)
            assert got.keys() == expected.keys() and all(same(got[k], expected[k]) for k in got)
            harmless += 1
    assert harmless > 0


def test_wrong_magic(saved):
    _rewrite(saved + ".index", _flip(os.path.getsize(saved + ".index") - 1, 7))
    with pytest.raises(ck.CheckpointError,
                       match=r"'.*model\.index': bad table magic number 0x5b4775248b80fb57"):
        ck.BundleReader(saved)


def test_not_a_checkpoint(tmp_path):
    prefix = str(tmp_path / "junk")
    pathlib.Path(prefix + ".index").write_bytes(b"hello world, not a table" * 4)
    with pytest.raises(ck.CheckpointError, match=r"'.*junk\.index'.*magic"):
        ck.BundleReader(prefix)


def test_reads_big_endian_bundles(tmp_path):
    """TF on a big-endian host writes endianness=BIG and big-endian tensor bytes."""
    values = {"f": np.arange(6, dtype=">f4").reshape(2, 3), "i": np.array([1, -2], ">i8"),
              "b": np.array([True, False])}
    prefix = str(tmp_path / "be")
    items, offset, raw = [], 0, b""
    for name in sorted(values):
        data = values[name].tobytes()
        items.append((name.encode(), _encode_entry(_NP_TO_TF[values[name].dtype.newbyteorder("=")],
                                                   values[name].shape, offset, len(data),
                                                   ck.masked_crc32c(data))))
        offset, raw = offset + len(data), raw + data
    header = bytes([0x08, 1, 0x10, 1]) + _encode_header()[2:]  # num_shards 1, endianness BIG
    pathlib.Path(prefix + ".index").write_bytes(_build_table([(b"", header)] + items))
    pathlib.Path(prefix + ".data-00000-of-00001").write_bytes(raw)
    got = read_all(prefix)
    for name, value in values.items():
        assert got[name].dtype.isnative and got[name].shape == value.shape
        np.testing.assert_array_equal(got[name], value)


def test_rejects_newer_bundle_versions(tmp_path):
    prefix = str(tmp_path / "v")
    header = bytes([0x08, 1, 0x1A, 0x04, 0x08, 0x05, 0x10, 0x02])  # producer 5, min_consumer 2
    pathlib.Path(prefix + ".index").write_bytes(_build_table([(b"", header)]))
    pathlib.Path(prefix + ".data-00000-of-00001").write_bytes(b"")
    with pytest.raises(ck.CheckpointError, match=r"'.*v\.index'.*min_consumer 2\) is not readable"):
        ck.BundleReader(prefix)


def test_compressed_blocks_are_rejected(tmp_path):
    # A table whose data block claims snappy compression, with a valid CRC.
    prefix = str(tmp_path / "snappy")
    ck.write_bundle(prefix, {"a": np.zeros(1)})
    table = bytearray(pathlib.Path(prefix + ".index").read_bytes())
    footer = table[-FOOTER_SIZE:]
    _, _, pos = _decode_handle(footer)
    offset, size, _ = _decode_handle(footer, pos)
    block = bytes(table[offset:offset + size])
    first_offset, first_size, _ = _decode_handle(next(iter(_block_entries(block, "i")))[1])
    table[first_offset + first_size] = 1
    crc = google_crc32c.extend(google_crc32c.value(bytes(table[first_offset:first_offset + first_size])), b"\x01")
    table[first_offset + first_size + 1:first_offset + first_size + 5] = struct.pack("<I", _mask(crc))
    pathlib.Path(prefix + ".index").write_bytes(bytes(table))
    with pytest.raises(ck.CheckpointError, match="compression type 1; only uncompressed"):
        ck.BundleReader(prefix)


def _index_with_entry(prefix, entry):
    header = bytes([0x08, 1, 0x1A, 0x02, 0x08, 0x01])
    pathlib.Path(prefix + ".index").write_bytes(_build_table([(b"", header), (b"t", entry)]))
    pathlib.Path(prefix + ".data-00000-of-00001").write_bytes(b"")


@pytest.mark.parametrize("entry, match", [
    (bytes([0x08, 1, 0x10, 0x02]), "field 2 has the wrong wire type"),  # shape as a varint
    (bytes([0x08, 1, 0x12, 0x02, 0x10, 0x03]), "field 2 has the wrong wire type"),  # a dim as a varint
    (bytes([0x08, 1, 0x22, 0x01, 0x00]), "field 4 has the wrong wire type"),  # offset as bytes
])
def test_index_fields_of_the_wrong_wire_type(tmp_path, entry, match):
    prefix = str(tmp_path / "w")
    _index_with_entry(prefix, entry)
    with pytest.raises(ck.CheckpointError, match=r"Corrupt checkpoint index .*w\.index.*" + match):
        ck.BundleReader(prefix)


def test_shape_numpy_cannot_hold(tmp_path):
    prefix = str(tmp_path / "huge")
    size_2_62 = bytes([0x80] * 8 + [0x40])  # the varint 2**62
    shape = bytes([0x12, 1 + len(size_2_62), 0x08]) + size_2_62 + bytes([0x12, 0])  # [2**62, 0]
    _index_with_entry(prefix, bytes([0x08, 1, 0x12, len(shape)]) + shape)
    with pytest.raises(ck.CheckpointError, match=r"huge\.index.*'t' has shape \[4611686018427387904, 0\]"):
        ck.BundleReader(prefix).get_tensor("t")


def test_crc_masking_matches_tf():
    # crc32c("a") = 0xc1d04330; TF's Mask() of it, and of crc32c("") = 0.
    assert google_crc32c.value(b"a") == 0xC1D04330
    assert _mask(0) == 0xA282EAD8
    assert _unmask_crc32c(ck.masked_crc32c(b"abc")) == google_crc32c.value(b"abc")


# ---------------------------------------------------------------------------
# Atomic saves
# ---------------------------------------------------------------------------

def _files(directory):
    return sorted(p.name for p in pathlib.Path(directory).iterdir())


def test_exception_mid_data_write_keeps_previous(saved, monkeypatch):
    before = _files(os.path.dirname(saved))
    calls = []

    def failing(f, chunk):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full (injected)")
        f.write(chunk)

    monkeypatch.setattr("sepconv._src.checkpoint.bundle._write_chunk", failing)
    with pytest.raises(OSError, match="injected"):
        ck.write_bundle(saved, sample_tensors(1))
    assert _files(os.path.dirname(saved)) == before  # temporary files removed
    assert all(same(v, sample_tensors()[k]) for k, v in read_all(saved).items())


@pytest.mark.parametrize("failing_target", [".data-00000-of-00001", ".index"])
def test_exception_in_rename_keeps_previous(saved, monkeypatch, failing_target):
    before = _files(os.path.dirname(saved))
    real_replace = os.replace

    def replace(src, dst):
        if dst == saved + failing_target:
            raise OSError("rename failed (injected)")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="injected"):
        ck.write_bundle(saved, sample_tensors(1))
    monkeypatch.undo()
    assert _files(os.path.dirname(saved)) == before
    assert all(same(v, sample_tensors()[k]) for k, v in read_all(saved).items())


def test_successful_overwrite_leaves_no_temporaries(saved):
    before = _files(os.path.dirname(saved))
    ck.write_bundle(saved, sample_tensors(1))
    assert _files(os.path.dirname(saved)) == before
    assert all(same(v, sample_tensors(1)[k]) for k, v in read_all(saved).items())


_KILL_CHILD = textwrap.dedent("""
    import importlib.util, os, sys, time
    import numpy as np
    spec = importlib.util.spec_from_file_location("ck", os.path.join(sys.argv[1], "__init__.py"),
                                                  submodule_search_locations=[sys.argv[1]])
    ck = importlib.util.module_from_spec(spec); sys.modules["ck"] = ck; spec.loader.exec_module(ck)
    prefix, kill_at, stage = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    ck.bundle._IO_CHUNK = 1 << 16
    real_write, real_replace = ck.bundle._write_chunk, os.replace

    def announce_and_stall(message):
        print(message, flush=True)
        time.sleep(60)  # the parent SIGKILLs us here

    def slow_write(f, chunk):  # a slow disk: the kill lands inside the data write
        real_write(f, chunk)
        if not getattr(slow_write, "announced", False):
            slow_write.announced = True
            print("mid-save", flush=True)
        time.sleep(0.05)

    def replace(src, dst):
        if stage == "before-rename" or (stage == "between-renames" and dst.endswith(".index")):
            announce_and_stall("mid-save")
        real_replace(src, dst)

    for i in range(1000):
        tensors = {"big": np.full((1 << 20,), i, np.float32), "step": np.array(i, np.int64),
                   "w": np.full((3, 3), -i, np.float64)}
        if i == kill_at:
            if stage == "data":
                ck.bundle._write_chunk = slow_write
            else:
                os.replace = replace
        ck.write_bundle(prefix, tensors)
        print("saved", i, flush=True)
""")


def _run_and_kill(prefix, kill_at, stage):
    child = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, str(CHECKPOINT_PACKAGE), prefix,
                              str(kill_at), stage], stdout=subprocess.PIPE, text=True)
    lines = []
    watchdog = threading.Timer(120, child.kill)  # never hang the suite
    watchdog.start()
    try:
        for line in child.stdout:
            lines.append(line.strip())
            if line.strip() == "mid-save":
                os.kill(child.pid, signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        child.kill()
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL, lines
    assert lines == ["saved %d" % i for i in range(kill_at)] + ["mid-save"], lines


@pytest.mark.parametrize("stage", ["data", "before-rename"])
def test_sigkill_mid_save_keeps_previous_checkpoint(tmp_path, stage):
    """A process saving a 4 MB checkpoint in a loop is SIGKILLed while writing save #3:
    the checkpoint at that prefix is still save #2, complete and CRC-clean."""
    prefix = str(tmp_path / "loop.ckpt")
    _run_and_kill(prefix, 3, stage)
    got = read_all(prefix)
    assert int(got["step"]) == 2
    assert (got["big"] == 2).all() and got["big"].shape == (1 << 20,)
    assert (got["w"] == -2).all()
    leftovers = [n for n in _files(tmp_path) if n.endswith(".tmp")]
    assert stage != "data" or leftovers  # the killed save's temporary file stays behind


def test_sigkill_between_the_two_renames_is_detected(tmp_path):
    """The one unprotected instant (new data renamed in, old index not yet replaced) is
    caught by the CRCs: a clear error, never wrong values."""
    prefix = str(tmp_path / "loop.ckpt")
    _run_and_kill(prefix, 2, "between-renames")
    reader = ck.BundleReader(prefix)
    with pytest.raises(ck.CheckpointError, match=r"Checksum mismatch for tensor 'big'.*does not belong"):
        reader.get_tensor("big")


# ---------------------------------------------------------------------------
# The `checkpoint` state file
# ---------------------------------------------------------------------------

def test_state_file_round_trip(tmp_path):
    names = ["m-1", "we\"ird 'näme'\t\\-2", "m-3"]
    for n in names:
        ck.write_bundle(str(tmp_path / n), {"a": np.zeros(1)}, sync=False)
    paths = [str(tmp_path / n) for n in names]
    ck.update_checkpoint_state(str(tmp_path), paths[-1], paths[:-1])
    state = ck.get_checkpoint_state(tmp_path)
    assert state.model_checkpoint_path == paths[-1]
    assert state.all_model_checkpoint_paths == paths
    assert ck.latest_checkpoint(tmp_path) == paths[-1]
    text = (tmp_path / "checkpoint").read_text(encoding="utf-8")
    assert text.startswith('model_checkpoint_path: "%s/m-3"\n' % tmp_path)
    assert r'we\"ird \'näme\'\t\\-2' in text


def test_state_file_control_characters_and_line_separators(tmp_path):
    # TF 2.21's protobuf writes ASCII control characters in octal and the rest
    # as UTF-8; U+2028 and U+0085 are no line ends of the text format.
    names = ["ctl\x01\x0b\x1c\x7f-1", "line\u2028sep\x85-2"]
    paths = [str(tmp_path / n) for n in names]
    for p in paths:
        ck.write_bundle(p, {"a": np.zeros(1)}, sync=False)
    ck.update_checkpoint_state(str(tmp_path), paths[-1], paths[:-1])
    text = (tmp_path / "checkpoint").read_text(encoding="utf-8")
    assert r'ctl\001\013\034\177-1"' in text and 'line\u2028sep\x85-2"' in text
    assert ck.get_checkpoint_state(tmp_path).all_model_checkpoint_paths == paths
    assert ck.latest_checkpoint(tmp_path) == paths[-1]


def test_unreadable_state_file_is_no_state(tmp_path, caplog):
    (tmp_path / "checkpoint").mkdir()  # as TF: logged, and no state
    assert ck.get_checkpoint_state(tmp_path) is None
    assert ck.latest_checkpoint(tmp_path) is None
    assert "checkpoint ignored" in caplog.text


def test_state_file_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir("run")
    ck.write_bundle("run/model-5", {"a": np.zeros(1)}, sync=False)
    ck.update_checkpoint_state("run", "run/model-5", ["run/model-4"])
    assert (tmp_path / "run" / "checkpoint").read_text() == (
        'model_checkpoint_path: "model-5"\n'
        'all_model_checkpoint_paths: "model-4"\n'
        'all_model_checkpoint_paths: "model-5"\n')
    assert ck.latest_checkpoint("run") == os.path.join("run", "model-5")
    ck.update_checkpoint_state(str(tmp_path / "run"), str(tmp_path / "run" / "model-5"),
                               save_relative_paths=True)
    assert (tmp_path / "run" / "checkpoint").read_text().splitlines()[0] == 'model_checkpoint_path: "model-5"'


def test_state_file_parsing_tolerates_tf_extras(tmp_path):
    (tmp_path / "checkpoint").write_text(
        '# written by TF\nmodel_checkpoint_path: "ckpt-2"\n'
        "all_model_checkpoint_paths: 'ckpt-1'\nall_model_checkpoint_paths: \"ckpt-\\062\"\n"
        "all_model_checkpoint_timestamps: 1700000000.5\n"
        "all_model_checkpoint_timestamps: 1700000001.25\nlast_preserved_timestamp: 1699999999.0\n")
    state = ck.get_checkpoint_state(tmp_path)
    assert state.model_checkpoint_path == str(tmp_path / "ckpt-2")
    assert state.all_model_checkpoint_paths == [str(tmp_path / "ckpt-1"), str(tmp_path / "ckpt-2")]
    assert ck.latest_checkpoint(tmp_path) is None  # no ckpt-2.index
    with pytest.raises(ck.CheckpointNotFoundError, match="Couldn't find 'checkpoint' file or checkpoints"):
        ck.resolve_checkpoint_path(tmp_path)


@pytest.mark.parametrize("text, match", [
    ('model_checkpoint_path: unquoted\n', "expected a quoted string"),
    ('model_checkpoint_path "x"\n', "Malformed checkpoint state file"),
    ('all_model_checkpoint_paths: "x"\n', "Invalid checkpoint state"),
    ('model_checkpoint_path: "bad\\q"\n', "Malformed escape"),
])
def test_malformed_state_file(tmp_path, text, match):
    (tmp_path / "checkpoint").write_text(text)
    with pytest.raises(ck.CheckpointError, match=match):
        ck.get_checkpoint_state(tmp_path)


def test_no_state_file(tmp_path):
    assert ck.get_checkpoint_state(tmp_path) is None
    assert ck.latest_checkpoint(tmp_path) is None
    assert ck.resolve_checkpoint_path(str(tmp_path / "prefix")) == str(tmp_path / "prefix")


def test_state_path_conflict(tmp_path):
    with pytest.raises(RuntimeError, match="conflicts with path used for checkpoint state"):
        ck.update_checkpoint_state(str(tmp_path), str(tmp_path / "checkpoint"))
