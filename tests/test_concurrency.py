"""Threads: per-thread graph, variable-scope and arg_scope stacks; shared graphs create once.

As in TF (checked with TF 2.21 ``compat.v1``): the default-graph stack, the
variable-scope stack with its name counters, and slim's arg_scope stack are
per thread. Threads that build separate graphs at once never see each other's
scopes or variables. Threads that share a graph through ``AUTO_REUSE`` or a
``make_template`` create every variable exactly once, and a failing call in
one thread undoes only its own changes.

Each stress test starts its threads together at a barrier (the timeouts only
turn a deadlock into a failure; nothing is timed).
"""
import random
import threading

import pytest
import torch

import sepconv as sc

THREADS = 32
JOIN_TIMEOUT_S = 120


def run_in_threads(target, count=THREADS):
    """Runs ``target(index, barrier)`` in ``count`` threads and re-raises the first failure."""
    barrier = threading.Barrier(count, timeout=JOIN_TIMEOUT_S)
    errors = []

    def guarded(index):
        try:
            target(index, barrier)
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    if errors:
        raise errors[0]


def names(variables):
    return [v.name for v in variables]


def small_input(channels=2):
    return torch.randn(2, 6, 6, channels, generator=torch.Generator().manual_seed(7))


# -- per-thread stacks -----------------------------------------------------------------------
def test_each_thread_has_its_own_default_graph_stack():
    global_default = sc.get_default_graph()
    rounds = 5

    def build(index, barrier):
        for round_index in range(rounds):
            with sc.Graph().as_default() as graph:
                barrier.wait()  # every thread is inside its own as_default() now
                assert sc.get_default_graph() is graph
                for j in range(index + 1):
                    sc.get_variable(f"v{j}", [1], initializer=sc.zeros_initializer())
                sc.separable_conv2d(small_input(), 3, 3, 1)
                barrier.wait()
                assert names(graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES)) == (
                    [f"v{j}:0" for j in range(index + 1)]
                    + ["SeparableConv2d/depthwise_weights:0", "SeparableConv2d/pointwise_weights:0",
                       "SeparableConv2d/biases:0"])
            assert sc.get_default_graph() is global_default

    run_in_threads(build)
    assert sc.get_default_graph() is global_default


def test_threads_sharing_a_graph_do_not_see_each_others_variable_scopes():
    graph = sc.Graph()
    created = {}

    def build(index, barrier):
        with graph.as_default():
            assert sc.get_variable_scope().name == ""
            with sc.variable_scope(f"t{index}"), sc.variable_scope("inner"):
                barrier.wait()  # all threads are inside their scopes at once
                assert sc.get_variable_scope().name == f"t{index}/inner"
                created[index] = sc.get_variable("w", [1], initializer=sc.ones_initializer())
                with sc.variable_scope(None, default_name="block") as block:
                    assert block.name == f"t{index}/inner/block"
                barrier.wait()
            assert sc.get_variable_scope().name == ""

    run_in_threads(build)
    assert sorted(v.name for v in created.values()) == sorted(f"t{i}/inner/w:0" for i in range(THREADS))
    assert len(graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES)) == THREADS


def test_a_new_thread_starts_at_the_root_scope_and_counts_names_itself_as_tf_does():
    # TF 2.21 compat.v1 gives ['conv', 'conv', ''] for the same program.
    graph = sc.Graph()
    seen = []

    def open_default_scope():
        with graph.as_default(), sc.variable_scope(None, default_name="conv") as scope:
            seen.append(scope.name)

    def read_scope():
        with graph.as_default():
            seen.append(sc.get_variable_scope().name)

    for target in (open_default_scope, open_default_scope):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
    with graph.as_default(), sc.variable_scope("outer"):
        thread = threading.Thread(target=read_scope)
        thread.start()
        thread.join()
    assert seen == ["conv", "conv", ""]


def test_each_thread_has_its_own_arg_scope_stack():
    def build(index, barrier):
        padding = "VALID" if index % 2 else "SAME"
        with sc.arg_scope([sc.separable_conv2d], padding=padding, depth_multiplier=index + 1):
            barrier.wait()
            scoped = sc.current_arg_scope()[sc.arg_scope_func_key(sc.separable_conv2d)]
            assert scoped == {"padding": padding, "depth_multiplier": index + 1}
            with sc.Graph().as_default():
                y = sc.separable_conv2d(small_input(), None, 3)
            barrier.wait()
        assert tuple(y.shape) == ((2, 4, 4, 2 * (index + 1)) if index % 2 else (2, 6, 6, 2 * (index + 1)))
        assert sc.current_arg_scope() == {}

    run_in_threads(build)


# -- shared graphs: each variable exactly once -------------------------------------------------
def test_auto_reuse_from_many_threads_creates_each_variable_once():
    graph = sc.Graph()
    variable_names = [f"v{i}" for i in range(50)]
    results = {}

    def build(index, barrier):
        order = list(variable_names)
        random.Random(index).shuffle(order)
        with graph.as_default(), sc.variable_scope("shared", reuse=sc.AUTO_REUSE):
            barrier.wait()
            results[index] = {name: sc.get_variable(name, [3], regularizer=sc.l2_regularizer(0.5))
                              for name in order}

    run_in_threads(build)
    first = results[0]
    for got in results.values():
        assert all(got[name] is first[name] for name in variable_names)
    expected = sorted(f"shared/{name}:0" for name in variable_names)
    assert sorted(names(graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES))) == expected
    assert sorted(names(graph.get_collection(sc.GraphKeys.TRAINABLE_VARIABLES))) == expected
    assert len(graph.get_collection(sc.GraphKeys.REGULARIZATION_LOSSES)) == len(variable_names)


def test_auto_reuse_layer_from_many_threads_shares_one_set_of_weights():
    graph = sc.Graph()
    calls_per_thread = 20
    outputs = {}

    def build(index, barrier):
        with graph.as_default():
            barrier.wait()
            outputs[index] = [sc.separable_conv2d(small_input(), 4, 3, 2, scope="layer", reuse=sc.AUTO_REUSE,
                                                  weights_regularizer=sc.l2_regularizer(0.1)).detach()
                              for _ in range(calls_per_thread)]

    run_in_threads(build)
    assert names(graph.get_collection(sc.GraphKeys.MODEL_VARIABLES)) == [
        "layer/depthwise_weights:0", "layer/pointwise_weights:0", "layer/biases:0"]
    assert len(graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES)) == 3
    assert len(graph.get_collection(sc.GraphKeys.REGULARIZATION_LOSSES)) == 2
    reference_output = outputs[0][0]
    assert all(torch.equal(y, reference_output) for ys in outputs.values() for y in ys)


def two_layer_model(x):
    net = sc.separable_conv2d(x, 4, 3, 1, weights_regularizer=sc.l2_regularizer(0.1))
    return sc.separable_conv2d(net, 3, 3, 2, normalizer_fn=sc.batch_norm,
                               normalizer_params={"is_training": False, "scale": True})


def test_template_called_from_many_threads_at_once_creates_its_variables_once():
    graph = sc.Graph()
    calls_per_thread = 20
    outputs = {}
    with graph.as_default():
        template = sc.make_template("model", two_layer_model)

    def call(index, barrier):
        with graph.as_default():
            barrier.wait()  # the first calls race for the variable creation
            outputs[index] = [template(small_input()).detach() for _ in range(calls_per_thread)]

    run_in_threads(call)
    assert len(graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES)) == 3 + 2 + 4
    assert len(graph.get_collection(sc.GraphKeys.TRAINABLE_VARIABLES)) == 3 + 2 + 2
    assert len(graph.get_collection(sc.GraphKeys.REGULARIZATION_LOSSES)) == 2
    assert all(v.name.startswith("model/") for v in graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES))
    reference_output = outputs[0][0]
    assert all(torch.equal(y, reference_output) for ys in outputs.values() for y in ys)


def test_template_reuse_is_not_blamed_for_variables_other_threads_create():
    """Regression: the reuse check compared the shared trainable collection's length."""
    graph = sc.Graph()
    inside_template, other_created = threading.Event(), threading.Event()

    def body(x):
        w = sc.get_variable("w", [1], initializer=sc.ones_initializer())
        if tmpl.variable_scope is not None:  # a reuse call: let the other thread create now
            inside_template.set()
            assert other_created.wait(JOIN_TIMEOUT_S)
        return x * w

    with graph.as_default():
        tmpl = sc.make_template("tmpl", body)
        tmpl(torch.ones(1))

    def create_elsewhere():
        assert inside_template.wait(JOIN_TIMEOUT_S)
        with graph.as_default():
            sc.get_variable("elsewhere", [1], initializer=sc.zeros_initializer())
        other_created.set()

    creator = threading.Thread(target=create_elsewhere)
    creator.start()
    with graph.as_default():
        tmpl(torch.ones(1))  # raised "Trainable variable created ..." before the fix
    creator.join(JOIN_TIMEOUT_S)
    assert names(graph.get_collection(sc.GraphKeys.TRAINABLE_VARIABLES)) == ["tmpl/w:0", "elsewhere:0"]


def test_template_reuse_still_refuses_a_new_variable_created_in_its_own_thread():
    calls = []

    def body(x):
        calls.append(x)
        with sc.variable_scope(escape):  # an AUTO_REUSE scope from outside: creation is possible here
            return x * sc.get_variable(f"new{len(calls)}", [1], initializer=sc.ones_initializer())

    with sc.Graph().as_default():
        with sc.variable_scope("escape", reuse=sc.AUTO_REUSE) as escape:
            pass
        tmpl = sc.make_template("tmpl", body)
        tmpl(torch.ones(1))
        sc.get_variable("unrelated", [1], initializer=sc.ones_initializer())  # not the template's doing
        with pytest.raises(ValueError, match=r"Trainable variable created when calling a template after the "
                                             r"first time, perhaps you used a new name: .*'escape/new2'"):
            tmpl(torch.ones(1))


def test_failing_calls_in_one_thread_leave_other_threads_variables_alone():
    graph = sc.Graph()
    rounds = 40
    bad_params = {"decay": 2.0}  # fails inside the layer, after its conv variables were created

    def work(index, barrier):
        with graph.as_default():
            barrier.wait()
            for round_index in range(rounds):
                if index % 2:
                    with pytest.raises(ValueError, match=r"Invalid decay 2\.0"):
                        sc.separable_conv2d(small_input(), 2, 3, 1, scope=f"bad{index}_{round_index}",
                                            normalizer_fn=sc.batch_norm, normalizer_params=bad_params,
                                            weights_regularizer=sc.l2_regularizer(0.1))
                else:
                    sc.separable_conv2d(small_input(), 2, 3, 1, scope=f"good{index}_{round_index}",
                                        weights_regularizer=sc.l2_regularizer(0.1))

    run_in_threads(work)
    good = sorted(f"good{i}_{r}/{name}:0" for i in range(0, THREADS, 2) for r in range(rounds)
                  for name in ("depthwise_weights", "pointwise_weights", "biases"))
    for key in (sc.GraphKeys.GLOBAL_VARIABLES, sc.GraphKeys.TRAINABLE_VARIABLES, sc.GraphKeys.MODEL_VARIABLES):
        assert sorted(names(graph.get_collection(key))) == good
    assert sorted(graph._vars) == sorted(name[:-2] for name in good)
    assert len(graph.get_collection(sc.GraphKeys.REGULARIZATION_LOSSES)) == 2 * rounds * THREADS // 2


def test_rollback_keeps_a_variable_another_thread_already_reused():
    """Thread A creates ``w`` and ``only_a`` and fails later in the same call; B reused ``w`` meanwhile.

    Regression: A's rollback removed ``w`` too, leaving B holding a variable
    that no collection or checkpoint knows. Now ``w`` stays (TF never rolls
    back at all) and only what no other thread saw is undone.
    """
    graph = sc.Graph()
    created, reused = threading.Event(), threading.Event()
    got = {}

    def thread_a():
        with graph.as_default(), sc.variable_scope("shared", reuse=sc.AUTO_REUSE):
            with pytest.raises(ValueError, match="late failure"), graph._atomic():
                sc.get_variable("w", [1], initializer=sc.ones_initializer(), regularizer=sc.l2_regularizer(0.5))
                sc.get_variable("only_a", [1], initializer=sc.ones_initializer())
                created.set()
                assert reused.wait(JOIN_TIMEOUT_S)
                raise ValueError("late failure")

    def thread_b():
        assert created.wait(JOIN_TIMEOUT_S)
        with graph.as_default(), sc.variable_scope("shared", reuse=sc.AUTO_REUSE):
            got["w"] = sc.get_variable("w", [1])
        reused.set()

    errors = []

    def guarded(target):
        try:
            target()
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(target,)) for target in (thread_a, thread_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    if errors:
        raise errors[0]
    for key in (sc.GraphKeys.GLOBAL_VARIABLES, sc.GraphKeys.TRAINABLE_VARIABLES):
        assert [v is got["w"] for v in graph.get_collection(key)] == [True]
    losses = graph.get_collection(sc.GraphKeys.REGULARIZATION_LOSSES)
    assert [loss.variable is got["w"] for loss in losses] == [True]
    assert sorted(graph._vars) == ["shared/w"] and not graph._uncommitted


def test_concurrent_failures_never_orphan_a_variable_a_successful_call_uses():
    """Stress: threads share AUTO_REUSE layers; a third of the calls fail after creating the conv weights."""
    graph = sc.Graph()
    rounds, layers = 20, 4
    used = []  # (variable) for every variable a successful call got

    def work(index, barrier):
        def record(getter, name, *args, **kwargs):
            variable = getter(name, *args, **kwargs)
            if not failing:
                used.append(variable)
            return variable

        failing = index % 3 == 0
        kwargs = dict(normalizer_fn=sc.batch_norm, normalizer_params={"decay": 2.0}) if failing else {}
        with graph.as_default(), sc.variable_scope(sc.get_variable_scope(), custom_getter=record):
            barrier.wait()
            for round_index in range(rounds):
                scope = f"shared{(index + round_index) % layers}"
                if failing:
                    with pytest.raises(ValueError, match=r"Invalid decay 2\.0"):
                        sc.separable_conv2d(small_input(), 2, 3, 1, scope=scope, reuse=sc.AUTO_REUSE, **kwargs)
                else:
                    sc.separable_conv2d(small_input(), 2, 3, 1, scope=scope, reuse=sc.AUTO_REUSE)

    run_in_threads(work)
    stored = graph.get_collection(sc.GraphKeys.GLOBAL_VARIABLES)
    assert len({id(v) for v in stored}) == len(stored) == len(graph._vars) == 3 * layers
    assert all(any(v is s for s in stored) for v in used)
    assert all(graph._vars[v.op_name] is v for v in used)
    assert not graph._uncommitted
