import threading

import pytest
import torch

import sepconv as sc


def _var(name):
    return sc.get_variable(name, [1], initializer=sc.zeros_initializer())


def test_graphs_are_isolated_and_nest():
    outer, inner = sc.Graph(), sc.Graph()
    with outer.as_default():
        _var("a")
        with inner.as_default():
            assert sc.get_default_graph() is inner
            _var("a")  # no clash: another graph
        assert sc.get_default_graph() is outer
    assert [v.name for v in outer.get_collection(sc.GraphKeys.GLOBAL_VARIABLES)] == ["a:0"]
    assert [v.name for v in inner.get_collection(sc.GraphKeys.GLOBAL_VARIABLES)] == ["a:0"]


def test_reset_default_graph_replaces_global_graph():
    before = sc.get_default_graph()
    sc.reset_default_graph()
    assert sc.get_default_graph() is not before


def test_reset_default_graph_inside_a_graph_block_raises():
    with sc.Graph().as_default():
        with pytest.raises(AssertionError, match="nested graphs"):
            sc.reset_default_graph()


def test_reset_default_graph_inside_a_variable_scope_of_the_global_graph_raises():
    # TF's variable_scope enters its graph: resetting would leave the block in another graph.
    with sc.variable_scope("a"):
        with pytest.raises(AssertionError, match="nested graphs"):
            sc.reset_default_graph()


def test_layer_outputs_are_filtered_by_their_layer_scope():
    # TF filters them by their tensor names ('net/c1/Relu:0'); here they carry aliases.
    with sc.Graph().as_default():
        with sc.variable_scope("net"):
            sc.separable_conv2d(torch.ones(1, 4, 4, 2), 2, 1, 1, scope="c1", outputs_collections="outs")
        sc.separable_conv2d(torch.ones(1, 4, 4, 2), 2, 1, 1, scope="c2", outputs_collections="outs")
        assert [t.aliases for t in sc.get_collection("outs", "net")] == [["net/c1"]]
        assert [len(sc.get_collection("outs", scope)) for scope in ("c2", "")] == [1, 2]


def test_collection_keys_and_filters_as_in_tf():
    with sc.Graph().as_default():
        sc.add_to_collection(("t", 1), 1)
        sc.add_to_collection("s", 2)
        assert sc.get_default_graph().get_all_collection_keys() == ["s"]  # string keys only
        assert sc.get_collection("missing", "(") == []  # no regex compiled for no items


def test_get_collection_filters_by_scope_regex():
    with sc.Graph().as_default():
        with sc.variable_scope("block1"):
            _var("w")
        with sc.variable_scope("block10"):
            _var("w")
        names = [v.name for v in sc.global_variables(scope="block1/")]
        assert names == ["block1/w:0"]
        assert len(sc.global_variables(scope="block1")) == 2  # re.match, as in TF


def test_collection_ref_is_live_and_get_collection_is_a_copy():
    with sc.Graph().as_default():
        ref = sc.get_collection_ref("things")
        sc.add_to_collection("things", 1)
        copy = sc.get_collection("things")
        sc.add_to_collections(["things", "others"], 2)
        assert ref == [1, 2] and copy == [1] and sc.get_collection("others") == [2]


def test_default_graph_is_per_thread():
    graph, seen = sc.Graph(), []

    def worker():
        seen.append(sc.get_default_graph() is graph)

    with graph.as_default():
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    assert seen == [False]


def test_variable_carries_tf_name_through_copy_and_pickle():
    import copy
    import io
    with sc.Graph().as_default():
        with sc.variable_scope("s"):
            v = _var("w")
    assert isinstance(v, torch.nn.Parameter)
    assert (v.name, v.op_name) == ("s/w:0", "s/w")
    assert copy.deepcopy(v).name == "s/w:0"
    buffer = io.BytesIO()
    torch.save(v, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=False).name == "s/w:0"
    assert "s/w" in repr(v)


def test_atomic_block_undoes_variables_collections_and_counters():
    graph = sc.Graph()
    with graph.as_default():
        _var("kept")
        with pytest.raises(RuntimeError):
            with graph._atomic():
                with sc.variable_scope(None, default_name="block"):
                    _var("gone")
                sc.add_to_collection("extra", 1)
                raise RuntimeError("boom")
        assert [v.name for v in sc.global_variables()] == ["kept:0"]
        assert sc.get_collection("extra") == []
        with sc.variable_scope(None, default_name="block") as scope:
            assert scope.name == "block"
