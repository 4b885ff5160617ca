"""sc.train: Saver, load_checkpoint/list_variables, init_from_checkpoint (sepconv._src.train)."""
import os
import pathlib

import numpy as np
import pytest
import torch

import sepconv as sc
from sepconv._src import checkpoint as ck
from sepconv._src import train

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
TF_DIR = FIXTURES / "ckpt_tf"
TF_PREFIX = str(TF_DIR / "model.ckpt")


def expected_tensors():
    with np.load(TF_DIR / "expected.npz") as z:
        return {k: z[k] for k in z.files}


def snapshot(variables):
    return [v.detach().clone() for v in variables]


def unchanged(variables, before):
    return all(torch.equal(v, b) for v, b in zip(variables, before))


def make_vars(seed=0):
    """A few variables of several dtypes and shapes in the default graph."""
    g = torch.Generator().manual_seed(seed)
    with sc.variable_scope("net"):
        w = sc.get_variable("w", initializer=torch.randn(3, 4, generator=g))
        b = sc.get_variable("b", initializer=torch.randn(4, generator=g, dtype=torch.float64))
        step = sc.get_variable("step", initializer=torch.tensor(seed, dtype=torch.int64),
                               trainable=False)
        mask = sc.get_variable("mask", initializer=torch.rand(2, 2, generator=g) > 0.5,
                               trainable=False)
        half = sc.get_variable("half", initializer=torch.randn(5, generator=g).half())
        empty = sc.get_variable("empty", initializer=torch.zeros(2, 0))
    return [w, b, step, mask, half, empty]


# ---------------------------------------------------------------------------
# Saver
# ---------------------------------------------------------------------------

def test_saver_round_trip(tmp_path):
    with sc.Graph().as_default():
        variables = make_vars(1)
        saved = snapshot(variables)
        saver = train.Saver()
        assert list(saver.var_list) == ["net/b", "net/empty", "net/half", "net/mask", "net/step",
                                        "net/w"]
        prefix = saver.save(str(tmp_path / "model.ckpt"), global_step=10)
        assert prefix == str(tmp_path / "model.ckpt-10")
        assert sorted(os.listdir(tmp_path)) == ["checkpoint", "model.ckpt-10.data-00000-of-00001",
                                                "model.ckpt-10.index"]
        with torch.no_grad():
            for v in variables:
                v.copy_(torch.zeros_like(v))
        saver.restore(prefix)
        assert unchanged(variables, saved)
        assert all(v.requires_grad == (v.dtype.is_floating_point and v.op_name != "net/step")
                   for v in variables)
    reader = train.load_checkpoint(prefix)
    assert reader.get_variable_to_dtype_map()["net/mask"] == np.bool_
    np.testing.assert_array_equal(reader.get_tensor("net/w"), saved[0].numpy())


def test_saver_restores_into_a_fresh_graph_and_by_directory(tmp_path):
    with sc.Graph().as_default():
        saved = snapshot(make_vars(2))
        train.Saver().save(str(tmp_path / "m"), global_step=torch.tensor(3))
    with sc.Graph().as_default():
        fresh = make_vars(5)
        train.Saver().restore(str(tmp_path))  # a directory: resolved through `checkpoint`
        assert unchanged(fresh, saved)


def test_saver_var_list_forms(tmp_path):
    with sc.Graph().as_default():
        a = sc.get_variable("a", initializer=torch.ones(2))
        b = sc.get_variable("s/b", initializer=torch.full((3,), 2.0))
        saver = train.Saver([b, a])
        assert list(saver.var_list) == ["a", "s/b"]
        p1 = saver.save(str(tmp_path / "list"))
        assert train.list_variables(p1) == [("a", [2]), ("s/b", [3])]
        p2 = train.Saver({"renamed/x": a, "y": b}).save(str(tmp_path / "dict"))
        assert train.list_variables(p2) == [("renamed/x", [2]), ("y", [3])]
        with pytest.raises(ValueError, match="At least two variables have the same name: a"):
            train.Saver([a, a])
        with pytest.raises(TypeError, match="can only save sepconv Variables"):
            train.Saver([torch.zeros(2)])
        with pytest.raises(TypeError, match="must be a dict or a list"):
            train.Saver("a")


def test_saver_default_var_list_is_taken_at_construction(tmp_path):
    with sc.Graph().as_default():
        sc.get_variable("first", initializer=torch.ones(1))
        saver = train.Saver()
        sc.get_variable("later", initializer=torch.ones(1))
        prefix = saver.save(str(tmp_path / "m"))
    assert train.list_variables(prefix) == [("first", [1])]


def test_saver_with_no_variables(tmp_path):
    with sc.Graph().as_default():
        with pytest.raises(ValueError, match="No variables to save"):
            train.Saver()
        saver = train.Saver(allow_empty=True)
        assert saver.save(str(tmp_path / "m")) is None
        saver.restore(str(tmp_path / "m"))
    assert os.listdir(tmp_path) == []


def test_saver_includes_directly_made_variables_in_the_collection(tmp_path):
    g = sc.Graph()
    with g.as_default():
        v = sc.Variable(torch.arange(4.0), name="direct/v:0")
        g.add_to_collection(sc.GraphKeys.GLOBAL_VARIABLES, v)
        prefix = train.Saver().save(str(tmp_path / "m"))
    np.testing.assert_array_equal(train.load_variable(prefix, "direct/v:0"), np.arange(4.0, dtype=np.float32))


def test_saver_max_to_keep_and_state_file(tmp_path):
    with sc.Graph().as_default():
        sc.get_variable("v", initializer=torch.zeros(1))
        saver = train.Saver(max_to_keep=2)
        base = str(tmp_path / "model.ckpt")
        for step in range(4):
            saver.save(base, global_step=step)
        assert saver.last_checkpoints == [base + "-2", base + "-3"]
        assert sorted(os.listdir(tmp_path)) == [
            "checkpoint", "model.ckpt-2.data-00000-of-00001", "model.ckpt-2.index",
            "model.ckpt-3.data-00000-of-00001", "model.ckpt-3.index"]
        state = train.get_checkpoint_state(tmp_path)
        assert state.model_checkpoint_path == base + "-3"
        assert state.all_model_checkpoint_paths == [base + "-2", base + "-3"]
        assert train.latest_checkpoint(str(tmp_path)) == base + "-3"
        saver.save(base, global_step=2)  # re-saving moves it to the end
        assert saver.last_checkpoints == [base + "-3", base + "-2"]
        keep_all = train.Saver(max_to_keep=None, pad_step_number=True)
        p = keep_all.save(base, global_step=7)
        assert p == base + "-00000007" and keep_all.last_checkpoints == []
        assert train.get_checkpoint_state(tmp_path).all_model_checkpoint_paths == [p]
        assert os.path.exists(base + "-3.index")


def test_saver_argument_errors(tmp_path):
    with sc.Graph().as_default():
        sc.get_variable("v", initializer=torch.zeros(1))
        with pytest.raises(ValueError, match=r"Invalid max_to_keep -1: expected an int >= 0"):
            train.Saver(max_to_keep=-1)
        with pytest.raises(TypeError, match=r"Invalid max_to_keep '3': expected an int >= 0"):
            train.Saver(max_to_keep="3")
        with pytest.raises(TypeError, match=r"Invalid global_step 'abc': expected an int or a"):
            train.Saver().save(str(tmp_path / "m"), global_step="abc")
        assert os.listdir(tmp_path) == []
        assert train.Saver().save(str(tmp_path / "m"), global_step=torch.tensor(3.0)).endswith("m-3")


def test_saver_relative_save_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir("run")
    with sc.Graph().as_default():
        sc.get_variable("v", initializer=torch.ones(1))
        prefix = train.Saver().save("run/model", global_step=1)
    assert prefix == "run/model-1"
    assert (tmp_path / "run" / "checkpoint").read_text().startswith('model_checkpoint_path: "model-1"\n')
    assert train.latest_checkpoint("run") == os.path.join("run", "model-1")


def test_saver_write_state_false_and_missing_directory(tmp_path):
    with sc.Graph().as_default():
        sc.get_variable("v", initializer=torch.ones(1))
        saver = train.Saver()
        saver.save(str(tmp_path / "m"), write_state=False)
        assert not (tmp_path / "checkpoint").exists()
        with pytest.raises(ValueError, match="Parent directory of .*nodir/m doesn't exist, can't save"):
            saver.save(str(tmp_path / "nodir" / "m"))


def test_restore_path_errors(tmp_path):
    with sc.Graph().as_default():
        sc.get_variable("v", initializer=torch.ones(1))
        saver = train.Saver()
        with pytest.raises(ValueError, match="Can't load save_path when it is None"):
            saver.restore(None)
        with pytest.raises(ValueError, match="The passed save_path is not a valid checkpoint: .*nothing"):
            saver.restore(str(tmp_path / "nothing"))
        with pytest.raises(ValueError, match="Couldn't find 'checkpoint' file or checkpoints in given directory"):
            saver.restore(str(tmp_path))


@pytest.fixture
def ckpt_and_graph(tmp_path):
    """A checkpoint of make_vars(1) and a graph holding make_vars(7), whose values differ."""
    with sc.Graph().as_default():
        make_vars(1)
        prefix = train.Saver().save(str(tmp_path / "m"))
    g = sc.Graph()
    with g.as_default():
        variables = make_vars(7)
    return prefix, g, variables


def _inference_variable(value):
    with torch.inference_mode():
        return sc.Variable(value.clone(), name="inf:0")


@pytest.mark.parametrize("change, match", [
    (lambda vs: {"net/w": vs[0], "net/b": vs[1], "zzz/missing": vs[2]},
     r"no variable was changed:\n  Key zzz/missing not found in checkpoint \(for variable net/step:0\)"),
    (lambda vs: {"net/w": vs[0], "net/b": vs[1], "net/half": sc.Variable(torch.zeros(5, 1).half(), name="h:0")},
     r"Shape mismatch for variable h:0: the variable has shape \[5, 1\], checkpoint tensor net/half "
     r"has shape \[5\]"),
    (lambda vs: {"net/w": vs[0], "net/mask": vs[3], "net/b": sc.Variable(torch.zeros(4), name="b32:0")},
     r"Dtype mismatch for variable b32:0: the variable has dtype float32, checkpoint tensor net/b "
     r"has dtype float64"),
    (lambda vs: {"net/w": vs[0], "net/b": torch.zeros(1, dtype=torch.float64).expand(4)},
     r"Variable <tensor shape=\[4\] dtype=torch.float64> cannot be written in place: elements "
     r"of it share memory"),
    (lambda vs: {"net/w": vs[0], "net/half": vs[4], "net/b": _inference_variable(torch.zeros(4).double())},
     r"Variable inf:0 cannot be written in place: it was made under torch.inference_mode"),
])
def test_restore_errors_change_nothing(ckpt_and_graph, change, match):
    prefix, g, variables = ckpt_and_graph
    with g.as_default():
        var_list = change(variables)
        targets = list(var_list.values())
        before = snapshot(targets)
        with pytest.raises(ValueError, match=match):
            train.Saver(var_list).restore(prefix)
        assert unchanged(targets, before)


def test_restore_reports_every_problem(ckpt_and_graph):
    prefix, g, variables = ckpt_and_graph
    bad = {"net/w": sc.Variable(torch.zeros(4, 3), name="x:0"), "nope": variables[0],
           "net/step": sc.Variable(torch.zeros((), dtype=torch.int32), requires_grad=False, name="s:0")}
    with pytest.raises(ValueError) as info:
        train.Saver(bad).restore(prefix)
    message = str(info.value)
    assert "Key nope not found" in message and "[4, 3]" in message and "int32" in message


def test_restore_corrupt_data_changes_nothing(ckpt_and_graph):
    prefix, g, variables = ckpt_and_graph
    data = pathlib.Path(prefix + ".data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0x10  # the last tensor in key order: net/w
    data.write_bytes(bytes(raw))
    before = snapshot(variables)
    with g.as_default():
        with pytest.raises(ck.CheckpointError, match=r"Checksum mismatch for tensor 'net/w'"):
            train.Saver().restore(prefix)
    assert unchanged(variables, before)


def test_saver_round_trip_of_every_dtype(tmp_path):
    dtypes = [torch.float16, torch.float32, torch.float64, torch.int8, torch.uint8, torch.int16,
              torch.int32, torch.int64, torch.bool, torch.complex64, torch.complex128,
              torch.uint16, torch.uint32, torch.uint64]
    values = {str(d).replace("torch.", ""): torch.arange(6).reshape(2, 3).to(d) for d in dtypes}
    variables = {k: sc.Variable(v.clone(), requires_grad=False, name=k + ":0") for k, v in values.items()}
    saver = train.Saver(list(variables.values()))
    prefix = saver.save(str(tmp_path / "m"))
    dtype_map = train.load_checkpoint(prefix).get_variable_to_dtype_map()
    assert {k: str(v) for k, v in dtype_map.items()} == {k: k for k in values}
    with torch.no_grad():
        for v in variables.values():
            v.zero_()
    saver.restore(prefix)
    assert all(torch.equal(variables[k], values[k]) for k in values)


def test_saver_rejects_dtypes_without_a_checkpoint_type():
    with pytest.raises(TypeError, match="bf has dtype torch.bfloat16"):
        train.Saver({"bf": torch.zeros(2, dtype=torch.bfloat16)})


def test_restore_keeps_variables_on_their_device(tmp_path):
    # The meta device stands in for an accelerator: values are staged onto the
    # variable's device, never the variable moved to the checkpoint's (CPU).
    with sc.Graph().as_default():
        saved = sc.get_variable("v", initializer=torch.arange(3.0))
        prefix = train.Saver().save(str(tmp_path / "m"))
    with sc.Graph().as_default():
        v = sc.get_variable("v", [3], device="meta")
        train.Saver().restore(prefix)
        assert v.device.type == "meta" and saved.device.type == "cpu"


# ---------------------------------------------------------------------------
# Reading TF's fixture
# ---------------------------------------------------------------------------

def test_list_variables_and_load_checkpoint_on_tf_fixture():
    expected = expected_tensors()
    listed = train.list_variables(TF_PREFIX)
    assert listed == sorted((k, list(v.shape)) for k, v in expected.items())
    assert train.list_variables(TF_DIR) == listed  # a directory resolves via TF's `checkpoint`
    assert train.load_checkpoint(str(TF_DIR)).prefix == TF_PREFIX
    np.testing.assert_array_equal(train.load_variable(TF_DIR, "conv/weights:0"), expected["conv/weights"])
    with pytest.raises(ValueError, match="Couldn't find 'checkpoint' file"):
        train.load_checkpoint(FIXTURES)
    with pytest.raises(ValueError, match="does not exist"):
        train.load_checkpoint(str(FIXTURES / "nothing"))


def test_saver_restores_tf_fixture():
    expected = expected_tensors()
    with sc.Graph().as_default():
        w = sc.get_variable("conv/weights", [3, 3, 2, 4], initializer=sc.zeros_initializer())
        step = sc.get_variable("global_step", [], dtype=torch.int64,
                               initializer=sc.zeros_initializer(), trainable=False)
        i16 = sc.get_variable("dtypes/int16", [3], dtype=torch.int16,
                              initializer=sc.zeros_initializer(), trainable=False)
        c64 = sc.Variable(torch.zeros(3, dtype=torch.complex64), requires_grad=False, name="dtypes/complex64:0")
        train.Saver([w, step, i16, c64]).restore(TF_PREFIX)
    np.testing.assert_array_equal(w.detach().numpy(), expected["conv/weights"])
    assert step.item() == 1000
    np.testing.assert_array_equal(i16.numpy(), expected["dtypes/int16"])
    np.testing.assert_array_equal(c64.numpy(), expected["dtypes/complex64"])


# ---------------------------------------------------------------------------
# init_from_checkpoint
# ---------------------------------------------------------------------------

def _get(name, shape, dtype=torch.float32):
    return sc.get_variable(name, shape, dtype=dtype, initializer=sc.zeros_initializer())


@pytest.fixture
def expected():
    return expected_tensors()


def test_init_scope_to_scope(expected):
    with sc.Graph().as_default():
        w = _get("new/weights", [3, 3, 2, 4])
        b = _get("new/biases", [4])
        d = _get("new/depthwise_weights", [3, 3, 2, 1])
        other = _get("elsewhere/biases", [4])
        train.init_from_checkpoint(TF_PREFIX, {"conv/": "new/"})
    for v, name in ((w, "conv/weights"), (b, "conv/biases"), (d, "conv/depthwise_weights")):
        np.testing.assert_array_equal(v.detach().numpy(), expected[name])
    assert not other.detach().any()


def test_init_partial_scope_name(expected):
    # A current-side name that is not a variable stands for its parent scope (TF's rule).
    with sc.Graph().as_default():
        w = _get("net/weights", [3, 3, 2, 4])
        b = _get("net/biases", [4])
        train.init_from_checkpoint(TF_DIR, {"conv/": "net/whatever"})
    np.testing.assert_array_equal(w.detach().numpy(), expected["conv/weights"])
    np.testing.assert_array_equal(b.detach().numpy(), expected["conv/biases"])


def test_init_variable_by_name_and_by_object(expected):
    with sc.Graph().as_default():
        k = _get("x/kernel", [3, 3, 2, 4])
        b = _get("x/bias", [4])
        train.init_from_checkpoint(TF_PREFIX, {"conv/weights": "x/kernel", "conv/biases": b})
    np.testing.assert_array_equal(k.detach().numpy(), expected["conv/weights"])
    np.testing.assert_array_equal(b.detach().numpy(), expected["conv/biases"])


def test_init_root_mappings(expected):
    with sc.Graph().as_default():
        gs = _get("model/global_step", [], torch.int64)
        ow = _get("model/other/w", [2, 2])
        train.init_from_checkpoint(TF_PREFIX, {"/": "model/"})
        assert gs.item() == 1000
        np.testing.assert_array_equal(ow.detach().numpy(), expected["other/w"])
    with sc.Graph().as_default():
        w = _get("w", [2, 2])
        train.init_from_checkpoint(TF_PREFIX, {"other/": "/"})
        np.testing.assert_array_equal(w.detach().numpy(), expected["other/w"])
    with sc.Graph().as_default():
        gs = _get("global_step", [], torch.int64)
        cb = _get("conv/biases", [4])
        train.init_from_checkpoint(TF_PREFIX, {"/": "/"})
        assert gs.item() == 1000
        np.testing.assert_array_equal(cb.detach().numpy(), expected["conv/biases"])


def test_init_one_tensor_into_several_variables(expected):
    with sc.Graph().as_default():
        a = _get("a", [4])
        b = _get("b", [4])
        train.init_from_checkpoint(TF_PREFIX, [("conv/biases", "a"), ("conv/biases", b)])
    np.testing.assert_array_equal(a.detach().numpy(), expected["conv/biases"])
    np.testing.assert_array_equal(b.detach().numpy(), expected["conv/biases"])


def test_init_scope_mapping_ignores_variables_outside_the_store(expected):
    # As TF: scope mappings see only get_variable's store; objects can be passed directly.
    g = sc.Graph()
    with g.as_default():
        direct = sc.Variable(torch.zeros(4), name="new/biases:0")
        g.add_to_collection(sc.GraphKeys.GLOBAL_VARIABLES, direct)
        w = _get("new/weights", [3, 3, 2, 4])
        train.init_from_checkpoint(TF_PREFIX, {"conv/": "new/"})
        assert not direct.detach().any() and w.detach().any()
        train.init_from_checkpoint(TF_PREFIX, {"conv/biases": direct})
    np.testing.assert_array_equal(direct.detach().numpy(), expected["conv/biases"])


@pytest.mark.parametrize("mapping, match", [
    (lambda: {"conv/weights": "nonexistent/var"},
     r"Assignment map with scope only name nonexistent should map to scope only conv/weights\. "
     r"Should be 'scope/': 'other_scope/'\."),
    (lambda: {"conv/": "net/", "nope/w": "net/weights"},
     r"Tensor nope/w is not found in .*model\.ckpt checkpoint"),
    (lambda: {"conv/": "net/", "zzz/": "net/"},
     r"Tensor zzz/biases \(biases in zzz/\) is not found in .*model\.ckpt checkpoint"),
    (lambda: {"conv/": "net/", "conv/depthwise_weights": "net/weights"},
     r"Shape of variable net/weights:0 \(\[3, 3, 2, 4\]\) doesn't match with shape of tensor "
     r"conv/depthwise_weights \(\[3, 3, 2, 1\]\) from checkpoint reader\."),
    (lambda: {"conv/": "net/", "dtypes/float64": "x/f64"},
     r"Dtype mismatch for variable x/f64:0: the variable has dtype float32, checkpoint tensor "
     r"dtypes/float64 has dtype float64"),
    (lambda: {"conv/": "net/", "conv/biases": torch.zeros(4)},
     r"must be a variable name or a sepconv Variable"),
])
def test_init_errors_change_nothing(mapping, match):
    with sc.Graph().as_default():
        variables = [_get("net/weights", [3, 3, 2, 4]), _get("net/biases", [4]),
                     _get("net/depthwise_weights", [3, 3, 2, 1]), _get("x/f64", [5])]
        exc = TypeError if "must be a variable" in match else ValueError
        with pytest.raises(exc, match=match):
            train.init_from_checkpoint(TF_PREFIX, mapping())
    assert all(not v.detach().any() for v in variables)


def test_init_partitioned_variables_are_rejected():
    with sc.Graph().as_default():
        _get("p/part_0", [2])
        _get("p/part_1", [2])
        with pytest.raises(ValueError, match="p is a partitioned variable"):
            train.init_from_checkpoint(TF_PREFIX, {"conv/biases": "p"})


def test_init_from_directory_without_checkpoint(tmp_path):
    with sc.Graph().as_default():
        with pytest.raises(ValueError, match="Couldn't find 'checkpoint' file or checkpoints"):
            train.init_from_checkpoint(str(tmp_path), {"/": "/"})
