"""Makes the TF checkpoint fixtures and proves sepconv's bundle format against TensorFlow.

Run with the TensorFlow venv (the only place TF is used in this project):

    /work/venvs/tf/bin/python tools/gen_checkpoints.py            # check + (re)write fixtures
    /work/venvs/tf/bin/python tools/gen_checkpoints.py --check    # check only, write nothing

sepconv's side (``src/sepconv/_src/checkpoint/``, pure numpy) runs in a
subprocess of the project venv (``SEPCONV_PYTHON``, default
``/work/main/.venv/bin/python``); arrays travel between the two through .npz
files in a temporary directory.

Checks (the script exits non-zero if any fails):

1. TF -> sepconv: the fixture written by ``tf.compat.v1.train.Saver`` reads back
   with sepconv's ``BundleReader`` with identical names, shapes, dtypes, values.
2. byte identity: sepconv's ``write_bundle`` of the same tensors produces an
   ``.index`` and ``.data-00000-of-00001`` byte-identical to TF's, for the
   fixture and for a checkpoint of 700 long-named variables whose index spans
   several 256 KiB table blocks (not kept as a fixture: it is 400 KB).
3. sepconv -> TF: checkpoints written by sepconv (default and 512-byte table
   blocks) are read by ``tf.train.load_checkpoint`` and restored by a TF
   ``Saver`` into graph variables with identical values.
4. TF string tensors and partitioned variables: sepconv lists them as TF's
   reader does (the slices' own index entries hidden), refuses to read them
   with a clear error, and reads the other tensors; ``debug_string()`` is
   byte-identical to TF's.
5. the ``checkpoint`` state file sepconv writes is byte-identical to TF's and
   both sides resolve the latest checkpoint alike.
6. ``sc.train.Saver`` (torch, graph variables) -> TF ``Saver.restore`` via
   ``tf.train.latest_checkpoint``, and TF ``Saver`` -> ``sc.train.Saver.restore``
   of the directory.
7. V1 checkpoints (``Saver(write_version=V1)``, one file and sharded): sepconv's
   ``latest_checkpoint`` finds them as TF's does, and reading one raises a
   ``CheckpointError`` that names the format and how to convert it.

Fixtures written (about 65 KB in all):

* ``tests/fixtures/ckpt_tf/``: ``model.ckpt.{index,data-00000-of-00001}``, TF's
  ``checkpoint`` state file (relative path), ``expected.npz`` (the values),
  ``expected.json`` (names, TF dtype names, shapes as TF's reader reports them)
  and ``debug_string.bin`` (TF reader's ``debug_string()``).
* ``tests/fixtures/ckpt_tf_strings/``: a checkpoint with a string variable and a
  partitioned one, ``expected.json`` (TF reader's shape and dtype maps) and
  ``debug_string.bin``.
* ``tests/fixtures/ckpt_tf_v1/``: V1 checkpoints of one variable, ``model.ckpt``
  and ``sharded/model.ckpt-00000-of-00001``, each with TF's ``checkpoint`` file.
"""
import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
SEPCONV_PYTHON = os.environ.get("SEPCONV_PYTHON", os.path.join(REPO, ".venv", "bin", "python"))
CHECKPOINT_PACKAGE = os.path.join(REPO, "src", "sepconv", "_src", "checkpoint")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tf_keras.src.legacy_tf_layers as _legacy  # noqa: E402  (tf-slim shim, kept for parity)

sys.modules.setdefault("tf_keras.legacy_tf_layers", _legacy)
import tensorflow as tf  # noqa: E402

tf.compat.v1.disable_eager_execution()

FAILURES = []


def check(ok, message):
    print(("  ok   " if ok else "  FAIL ") + message)
    if not ok:
        FAILURES.append(message)


# ---------------------------------------------------------------------------
# sepconv side, run in the project venv (the checkpoint package loaded by path: no torch needed)
# ---------------------------------------------------------------------------

_SEPCONV_HELPER = r"""
import importlib.util, json, os, sys
import numpy as np
spec = importlib.util.spec_from_file_location("sc_checkpoint", os.path.join(sys.argv[1], "__init__.py"),
                                              submodule_search_locations=[sys.argv[1]])
ck = importlib.util.module_from_spec(spec); sys.modules["sc_checkpoint"] = ck; spec.loader.exec_module(ck)
cmd = sys.argv[2]
if cmd == "write":  # write <npz> <prefix> [block_size]
    with np.load(sys.argv[3]) as z:
        tensors = {k: z[k] for k in z.files}
    kwargs = {"block_size": int(sys.argv[5])} if len(sys.argv) > 5 else {}
    ck.write_bundle(sys.argv[4], tensors, **kwargs)
elif cmd == "state":  # state <dir> <model_checkpoint_path> <json list of all paths>
    ck.update_checkpoint_state(sys.argv[3], sys.argv[4], json.loads(sys.argv[5]))
elif cmd == "latest":  # latest <dir>: prints the latest checkpoint as JSON
    print(json.dumps(ck.latest_checkpoint(sys.argv[3])))
elif cmd == "v1":  # v1 <prefix>: prints whether it exists and the error reading it gives, as JSON
    try:
        ck.BundleReader(sys.argv[3])
        error = None
    except ck.CheckpointError as e:
        error = "%s: %s" % (type(e).__name__, e)
    print(json.dumps({"exists": ck.checkpoint_exists(sys.argv[3]), "error": error}))
elif cmd == "read":  # read <prefix> <npz out> <json out>
    r = ck.BundleReader(sys.argv[3])
    shapes = r.get_variable_to_shape_map()
    names = r.get_variable_to_tf_dtype_name_map()
    readable, errors = {}, {}
    for k in shapes:
        try:
            readable[k] = r.get_tensor(k)
        except ck.CheckpointError as e:
            errors[k] = str(e)
    np.savez(sys.argv[4], **readable)
    with open(sys.argv[5], "w") as f:
        json.dump({"shapes": shapes, "dtypes": names, "errors": errors,
                   "debug_string": r.debug_string().decode("latin-1")}, f)
"""


def sepconv(*args):
    return subprocess.run([SEPCONV_PYTHON, "-c", _SEPCONV_HELPER, CHECKPOINT_PACKAGE]
                          + [str(a) for a in args], check=True, stdout=subprocess.PIPE,
                          text=True).stdout


_SEPCONV_TRAIN_HELPER = r"""
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
import sepconv as sc
from sepconv._src import train
cmd, ckpt_dir, out = sys.argv[2], sys.argv[3], sys.argv[4]
with sc.Graph().as_default():
    torch.manual_seed(0)
    with sc.variable_scope("net"):
        w = sc.get_variable("weights", [3, 3, 2, 4])
        b = sc.get_variable("biases", [4], dtype=torch.float64,
                            initializer=sc.random_normal_initializer())
        step = sc.get_variable("step", [], dtype=torch.int64, initializer=sc.zeros_initializer(),
                               trainable=False)
    saver = train.Saver()
    if cmd == "save":  # sc.train.Saver writes; TF restores
        with torch.no_grad():
            step.fill_(41)
        saver.save(ckpt_dir + "/model.ckpt", global_step=41)
    else:  # TF wrote `ckpt_dir` (with its `checkpoint` file); sc.train.Saver restores
        saver.restore(ckpt_dir)
    np.savez(out, **{v.op_name: v.detach().numpy() for v in (w, b, step)})
"""


def sepconv_train(cmd, ckpt_dir, tmp):
    out = os.path.join(tmp, "train.npz")
    subprocess.run([SEPCONV_PYTHON, "-c", _SEPCONV_TRAIN_HELPER, os.path.join(REPO, "src"), cmd,
                    ckpt_dir, out], check=True)
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


def sepconv_read(prefix, tmp):
    npz, js = os.path.join(tmp, "read.npz"), os.path.join(tmp, "read.json")
    sepconv("read", prefix, npz, js)
    with np.load(npz) as z:
        values = {k: z[k] for k in z.files}
    with open(js) as f:
        meta = json.load(f)
    return values, meta


def sepconv_write(tensors, prefix, tmp, block_size=None):
    npz = os.path.join(tmp, "write.npz")
    np.savez(npz, **tensors)
    sepconv("write", npz, prefix, *([block_size] if block_size else []))


# ---------------------------------------------------------------------------
# TF side
# ---------------------------------------------------------------------------

def tf_save(tensors, save_path, global_step=None):
    """Saves ``{name: array}`` as graph variables with a TF1 Saver; returns the prefix."""
    graph = tf.Graph()
    with graph.as_default():
        variables = []
        for name, value in tensors.items():
            variables.append(tf.compat.v1.Variable(value, name=name, dtype=tf.as_dtype(value.dtype),
                                                   use_resource=False))
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return saver.save(sess, save_path, global_step=global_step, write_meta_graph=False)


@contextlib.contextmanager
def working_directory(path):
    """Runs the block in ``path``, then returns to the current directory."""
    cwd = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(cwd)


def tf_save_relative(saver, save_dir):
    """Initialises the default graph's variables and saves them as ``save_dir/model.ckpt``.

    Saved from inside ``save_dir``, so that TF writes a relative path into ``checkpoint``.
    """
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        with working_directory(save_dir):
            saver.save(sess, "./model.ckpt", write_meta_graph=False)


def tf_restore(tensors_like, prefix):
    """Restores variables shaped like ``tensors_like`` from ``prefix`` with a TF Saver."""
    graph = tf.Graph()
    with graph.as_default():
        variables = {name: tf.compat.v1.Variable(np.zeros_like(value), name=name,
                                                 dtype=tf.as_dtype(value.dtype), use_resource=False)
                     for name, value in tensors_like.items()}
        saver = tf.compat.v1.train.Saver(list(variables.values()))
        with tf.compat.v1.Session(graph=graph) as sess:
            saver.restore(sess, prefix)
            return dict(zip(variables, sess.run(list(variables.values()))))


def tf_read(prefix):
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    return ({k: reader.get_tensor(k) for k in shapes}, shapes,
            {k: dtypes[k].name for k in shapes})


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def files_identical(prefix_a, prefix_b):
    result = True
    for suffix in (".index", ".data-00000-of-00001"):
        with open(prefix_a + suffix, "rb") as fa, open(prefix_b + suffix, "rb") as fb:
            a, b = fa.read(), fb.read()
        ok = a == b
        check(ok, "byte-identical %s (%d bytes)" % (suffix, len(a)) if ok else
              "%s differs: TF %d bytes, sepconv %d bytes" % (suffix, len(a), len(b)))
        result &= ok
    return result


# ---------------------------------------------------------------------------
# Fixture content
# ---------------------------------------------------------------------------

def fixture_tensors():
    rng = np.random.RandomState(1234)
    t = {
        "dtypes/float16": rng.randn(3, 4).astype(np.float16),
        "dtypes/float32": rng.randn(2, 3, 4).astype(np.float32),
        "dtypes/float64": rng.randn(5).astype(np.float64),
        "dtypes/int32": rng.randint(-2**31, 2**31 - 1, size=(4, 2)).astype(np.int32),
        "dtypes/int64": np.array([-2**63, -1, 0, 1, 2**63 - 1, 123456789012], np.int64),
        "dtypes/bool": rng.rand(3, 3) > 0.5,
        "dtypes/int8": rng.randint(-128, 128, size=(7,)).astype(np.int8),
        "dtypes/uint8": rng.randint(0, 256, size=(2, 5)).astype(np.uint8),
        "dtypes/int16": rng.randint(-2**15, 2**15, size=(3,)).astype(np.int16),
        "dtypes/complex64": (rng.randn(3) + 1j * rng.randn(3)).astype(np.complex64),
        "dtypes/complex128": (rng.randn(2, 2) + 1j * rng.randn(2, 2)).astype(np.complex128),
        "shapes/scalar": np.float32(3.5).reshape(()),
        "shapes/scalar_int": np.int64(-7).reshape(()),
        "shapes/empty": np.zeros((0,), np.float32),
        "shapes/empty_middle": np.zeros((3, 0, 2), np.float64),
        "shapes/rank4": rng.randn(3, 3, 4, 2).astype(np.float32),
        "shapes/big": rng.randn(40, 50).astype(np.float32),
        "specials/float32": np.array([np.inf, -np.inf, np.nan, -0.0, 1e-45, 3.4e38], np.float32),
        "conv/weights": rng.randn(3, 3, 2, 4).astype(np.float32),
        "conv/biases": rng.randn(4).astype(np.float32),
        "conv/depthwise_weights": rng.randn(3, 3, 2, 1).astype(np.float32),
        "other/w": rng.randn(2, 2).astype(np.float32),
        "global_step": np.int64(1000).reshape(()),
    }
    # 120 variables: the index's data block then has 9 restart points.
    for i in range(120):
        t["many/v%03d" % i] = np.full((2,), i, np.float32) + rng.randn(2).astype(np.float32)
    return t


def multiblock_tensors():
    """700 variables whose 600-byte names differ early: the index spans 2 table blocks."""
    rng = np.random.RandomState(99)
    return {"m%03d/%s" % (i, "x" * 600): rng.randn(2).astype(np.float32) for i in range(700)}


def roundtrip_tensors():
    rng = np.random.RandomState(7)
    t = {}
    for dtype in (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_, np.int8,
                  np.uint8, np.int16, np.complex64, np.complex128):
        for j, shape in enumerate([(), (0,), (5,), (2, 3), (2, 0, 3), (3, 2, 2, 2)]):
            raw = rng.randn(*shape) * 100 if shape else np.array(rng.randn() * 100)
            if np.dtype(dtype).kind == "c":
                raw = raw + 1j * raw[::-1] if shape else raw + 2j
            t["sc/%s/s%d" % (np.dtype(dtype).name, j)] = raw.astype(dtype)
    for i in range(150):
        t["sc/many/%03d" % i] = rng.randn(3).astype(np.float32)
    return t


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="verify only; do not write fixtures")
    args = parser.parse_args()
    print("TensorFlow", tf.__version__, "| sepconv python:", SEPCONV_PYTHON)
    tmp = tempfile.mkdtemp(prefix="gen_ckpt_")
    try:
        run(tmp, write_fixtures=not args.check)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if FAILURES:
        print("\n%d check(s) FAILED" % len(FAILURES))
        return 1
    print("\nall checks passed")
    return 0


def run(tmp, write_fixtures):
    tensors = fixture_tensors()

    # -- 1. TF writes the fixture; sepconv reads it --------------------------------
    print("1. TF Saver -> sepconv BundleReader (fixture, %d variables)" % len(tensors))
    out_dir = os.path.join(tmp, "ckpt_tf")
    os.makedirs(out_dir)
    with working_directory(out_dir):  # a relative save path: TF writes a relative path into `checkpoint`
        prefix = tf_save(tensors, "./model.ckpt")
    prefix = os.path.join(out_dir, os.path.basename(prefix))
    tf_values, tf_shapes, tf_dtypes = tf_read(prefix)
    check(set(tf_values) == set(tensors) and all(same(tf_values[k], tensors[k]) for k in tensors),
          "TF reads back its own fixture")
    values, meta = sepconv_read(prefix, tmp)
    check(set(values) == set(tensors), "sepconv lists the same %d names" % len(tensors))
    bad = [k for k in tensors if not same(values.get(k), tensors[k])]
    check(not bad, "sepconv reads identical values, dtypes and shapes" + (": %s" % bad if bad else ""))
    check(meta["shapes"] == {k: list(v) for k, v in tf_shapes.items()},
          "shape map equals TF's reader's")
    check(meta["dtypes"] == tf_dtypes, "dtype map equals TF's reader's")
    check(not meta["errors"], "sepconv reads every tensor: %s" % meta["errors"])
    tf_debug = tf.train.load_checkpoint(prefix).debug_string()
    check(meta["debug_string"].encode("latin-1") == tf_debug,
          "debug_string() byte-identical to TF's reader's (%d bytes)" % len(tf_debug))
    with open(os.path.join(out_dir, "debug_string.bin"), "wb") as f:
        f.write(tf_debug)
    with open(os.path.join(out_dir, "checkpoint")) as f:
        state = f.read()
    print("     TF's checkpoint state file:", state.strip().replace("\n", " | "))

    # -- 2. byte identity ------------------------------------------------------------
    print("2. sepconv write_bundle vs TF Saver: byte identity")
    sc_prefix = os.path.join(tmp, "sc_fixture")
    sepconv_write(tensors, sc_prefix, tmp)
    files_identical(prefix, sc_prefix)
    mb = multiblock_tensors()
    mb_dir = os.path.join(tmp, "tf_multiblock")
    os.makedirs(mb_dir)
    mb_prefix = tf_save(mb, os.path.join(mb_dir, "model.ckpt"))
    n_blocks = count_index_blocks(mb_prefix)
    check(n_blocks >= 2, "TF's %d-variable index spans %d data blocks" % (len(mb), n_blocks))
    mb_values, _ = sepconv_read(mb_prefix, tmp)
    check(len(mb_values) == len(mb) and all(same(mb_values[k], mb[k]) for k in mb),
          "sepconv reads TF's multi-block index")
    sc_mb = os.path.join(tmp, "sc_multiblock")
    sepconv_write(mb, sc_mb, tmp)
    files_identical(mb_prefix, sc_mb)

    # -- 3. sepconv writes; TF reads and restores -------------------------------------
    rt = roundtrip_tensors()
    for block_size in (None, 512):
        label = "default table blocks" if block_size is None else "%d-byte table blocks" % block_size
        print("3. sepconv write_bundle -> TF (%d tensors, %s)" % (len(rt), label))
        sc_prefix = os.path.join(tmp, "sc_rt_%s" % (block_size or "default"))
        sepconv_write(rt, sc_prefix, tmp, block_size)
        if block_size:
            check(count_index_blocks(sc_prefix) > 2,
                  "sepconv's index spans %d data blocks" % count_index_blocks(sc_prefix))
        got, shapes, dtypes = tf_read(sc_prefix)
        bad = [k for k in rt if not same(got.get(k), rt[k])]
        check(set(got) == set(rt) and not bad,
              "tf.train.load_checkpoint reads identical values" + (": %s" % bad[:5] if bad else ""))
        check(all(list(shapes[k]) == list(rt[k].shape) and dtypes[k] == rt[k].dtype.name
                  for k in rt), "TF sees identical shapes and dtypes")
        restorable = rt
        restored = tf_restore(restorable, sc_prefix)
        bad = [k for k in restorable if not same(restored[k], restorable[k])]
        check(not bad, "TF Saver.restore into %d graph variables gives identical values" % len(restored)
              + (": %s" % bad[:5] if bad else ""))

    # -- 4. string tensors, partitioned variables ------------------------------------------
    print("4. TF checkpoint with a string variable and a partitioned one")
    st_dir = os.path.join(tmp, "ckpt_tf_strings")
    os.makedirs(st_dir)
    graph = tf.Graph()
    with graph.as_default():
        s = tf.compat.v1.Variable(["hello", "checkpoint"], name="strings/s", use_resource=False)
        x = tf.compat.v1.Variable(np.arange(3, dtype=np.float32), name="x", use_resource=False)
        part = tf.compat.v1.get_variable("part/w", shape=[10, 4], use_resource=False,
                                         partitioner=tf.compat.v1.fixed_size_partitioner(3))
        tf_save_relative(tf.compat.v1.train.Saver([s, x, *part]), st_dir)
    st_prefix = os.path.join(st_dir, "model.ckpt")
    values, meta = sepconv_read(st_prefix, tmp)
    tf_reader = tf.train.load_checkpoint(st_prefix)
    tf_listing = {"shapes": tf_reader.get_variable_to_shape_map(),
                  "dtypes": {k: v.name for k, v in tf_reader.get_variable_to_dtype_map().items()}}
    check(meta["shapes"] == tf_listing["shapes"] == {"strings/s": [2], "x": [3], "part/w": [10, 4]}
          and meta["dtypes"] == tf_listing["dtypes"],
          "sepconv lists the string and the partitioned tensor as TF does: %s" % tf_listing)
    check(same(values["x"], np.arange(3, dtype=np.float32)), "sepconv reads the float tensor")
    for name, what in (("strings/s", "string"), ("part/w", "partitioned")):
        err = meta["errors"].get(name)
        check(err is not None and what in err, "get_tensor on the %s tensor: %s" % (what, err))
    tf_debug = tf_reader.debug_string()
    check(meta["debug_string"].encode("latin-1") == tf_debug,
          "debug_string() byte-identical to TF's reader's: %r" % tf_debug)
    with open(os.path.join(st_dir, "expected.json"), "w") as f:
        json.dump(tf_listing, f, indent=1, sort_keys=True)
    with open(os.path.join(st_dir, "debug_string.bin"), "wb") as f:
        f.write(tf_debug)

    # -- 5. the `checkpoint` state file ----------------------------------------------------
    print("5. `checkpoint` state file: sepconv vs TF")
    from tensorflow.python.checkpoint import checkpoint_management as cm
    for case, (save_dir, latest, all_paths) in enumerate([
            (os.path.join(tmp, "state_abs"), None, ["model-1", "model-2", "we\"ird 'näme'\t-3",
                                                  "ctl\x01\x0b\x1c\x7f-4", "line\u2028sep\x85-5"]),
            ("state_rel", None, ["model-1", "model-2"])]):
        with working_directory(tmp):
            os.makedirs(save_dir)
            paths = [os.path.join(save_dir, p) for p in all_paths]
            for p in paths:
                with open(p + ".index", "wb"):
                    pass
            cm.update_checkpoint_state(save_dir, paths[-1], paths[:-1])
            with open(os.path.join(save_dir, "checkpoint"), "rb") as f:
                tf_text = f.read()
            os.remove(os.path.join(save_dir, "checkpoint"))
            sepconv("state", save_dir, paths[-1], json.dumps(paths[:-1]))
            with open(os.path.join(save_dir, "checkpoint"), "rb") as f:
                sc_text = f.read()
            check(tf_text == sc_text, "case %d: state file byte-identical to TF's (%d bytes)"
                  % (case, len(sc_text))
                  if tf_text == sc_text else "case %d: TF %r != sepconv %r" % (case, tf_text, sc_text))
            state = tf.train.get_checkpoint_state(save_dir)
            check(state is not None and list(state.all_model_checkpoint_paths) ==
                  [os.path.join(save_dir, p) if not os.path.isabs(p) else p
                   for p in [os.path.relpath(q, save_dir) if not os.path.isabs(save_dir) else q
                             for q in paths]],
                  "case %d: TF parses sepconv's state file" % case)
            check(json.loads(sepconv("latest", save_dir)) == tf.train.latest_checkpoint(save_dir),
                  "case %d: latest_checkpoint agrees: %s" % (case, tf.train.latest_checkpoint(save_dir)))

    # -- 6. sc.train.Saver <-> tf.compat.v1.train.Saver, through the checkpoint directory ----
    print("6. sc.train.Saver <-> TF Saver (graph variables, `checkpoint` file, global_step)")
    sc_dir = os.path.join(tmp, "sc_saver")
    os.makedirs(sc_dir)
    sc_values = sepconv_train("save", sc_dir, tmp)
    latest = tf.train.latest_checkpoint(sc_dir)
    check(latest == os.path.join(sc_dir, "model.ckpt-41"), "TF's latest_checkpoint: %s" % latest)
    restored = tf_restore(sc_values, latest)
    check(all(same(restored[k], sc_values[k]) for k in sc_values),
          "TF Saver restores sc.train.Saver's %d variables exactly" % len(sc_values))
    tf_dir = os.path.join(tmp, "tf_saver")
    os.makedirs(tf_dir)
    rng = np.random.RandomState(5)
    tf_values = {"net/weights": rng.randn(3, 3, 2, 4).astype(np.float32),
                 "net/biases": rng.randn(4), "net/step": np.int64(77).reshape(())}
    tf_save(tf_values, os.path.join(tf_dir, "model.ckpt"), global_step=77)
    got = sepconv_train("restore", tf_dir, tmp)
    check(all(same(got[k], tf_values[k]) for k in tf_values),
          "sc.train.Saver.restore(<TF's directory>) restores TF's values exactly")

    # -- 7. V1 checkpoints: found as TF finds them, refused with a clear error ------------------
    print("7. TF V1 checkpoints (Saver(write_version=V1)), single file and sharded")
    v1_dir = os.path.join(tmp, "ckpt_tf_v1")
    for sharded in (False, True):
        save_dir = os.path.join(v1_dir, "sharded") if sharded else v1_dir
        os.makedirs(save_dir)
        graph = tf.Graph()
        with graph.as_default():
            v = tf.compat.v1.Variable(np.arange(4, dtype=np.float32), name="v", use_resource=False)
            tf_save_relative(tf.compat.v1.train.Saver(
                [v], write_version=tf.compat.v1.train.SaverDef.V1, sharded=sharded), save_dir)
        latest = tf.train.latest_checkpoint(save_dir)
        check(latest is not None and json.loads(sepconv("latest", save_dir)) == latest,
              "sharded=%s: latest_checkpoint agrees with TF's: %s (files %s)"
              % (sharded, latest, sorted(os.listdir(save_dir))))
        check(same(tf.train.load_checkpoint(latest).get_tensor("v"), np.arange(4, dtype=np.float32)),
              "sharded=%s: TF reads its V1 checkpoint" % sharded)
        result = json.loads(sepconv("v1", latest))
        check(result["exists"] and result["error"] is not None
              and result["error"].startswith("CheckpointError: %s is a TF V1 checkpoint" % latest),
              "sharded=%s: sepconv finds it and refuses it clearly: %s" % (sharded, result))

    if write_fixtures:
        if FAILURES:
            print("not writing fixtures: checks failed")
            return
        for name, src in (("ckpt_tf", out_dir), ("ckpt_tf_strings", st_dir), ("ckpt_tf_v1", v1_dir)):
            dst = os.path.join(FIXTURES, name)
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst)
        dst = os.path.join(FIXTURES, "ckpt_tf")
        np.savez(os.path.join(dst, "expected.npz"), **tensors)
        with open(os.path.join(dst, "expected.json"), "w") as f:
            rows = ['  %s: {"dtype": "%s", "shape": %s}' % (json.dumps(k), tf_dtypes[k],
                                                            json.dumps(list(tf_shapes[k])))
                    for k in sorted(tf_shapes)]
            f.write('{"prefix": "model.ckpt", "variables": {\n%s\n}}\n' % ",\n".join(rows))
        total = sum(os.path.getsize(os.path.join(d, f)) for n in ("ckpt_tf", "ckpt_tf_strings", "ckpt_tf_v1")
                    for d, _, fs in os.walk(os.path.join(FIXTURES, n)) for f in fs)
        print("fixtures written to %s (%d bytes)" % (FIXTURES, total))


def count_index_blocks(prefix):
    """Number of data blocks in a table, from its index block (parsed here, independently)."""
    with open(prefix + ".index", "rb") as f:
        table = f.read()
    footer = table[-48:]

    def varint(buf, pos):
        result = shift = 0
        while True:
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result, pos
            shift += 7

    _, pos = varint(footer, 0)
    _, pos = varint(footer, pos)
    off, pos = varint(footer, pos)
    size, pos = varint(footer, pos)
    block = table[off:off + size]
    return int.from_bytes(block[-4:], "little")  # index blocks use restart interval 1


if __name__ == "__main__":
    sys.exit(main())
