"""Long runs: a template called 100,000 times adds nothing to the graph and leaks nothing.

After the first call, a ``make_template`` model must add no variables, no
collection entries and no regularization-loss entries, whatever the number of
calls, and memory must not grow. Memory is measured two ways after a warm-up:
the process RSS (``/proc/self/status``) may grow by at most ``RSS_BOUND_MIB``,
and the number of live Python objects tracked by the garbage collector by at
most ``OBJECT_BOUND`` (a leak of one object per call would add 99,000).
"""
import gc

import pytest
import torch

import sepconv as sc

CALLS = 100_000
WARMUP_CALLS = 1_000
CHECK_EVERY = 10_000
RSS_BOUND_MIB = 8
OBJECT_BOUND = 500
TRAINING_STEPS = 1_000
WARMUP_STEPS = 300


def rss_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status on this platform")


def graph_state(graph):
    """Everything a call could add to: the store, every collection (by identity), the counters' names.

    Re-entering the template's scope counts up its counter (TF's does too); the
    value is one int, so only the set of counted names must stay the same.
    """
    return ({name: id(variable) for name, variable in graph._vars.items()},
            {key: [id(item) for item in items] for key, items in graph._collections.items()},
            sorted(graph._thread.scope_counts), len(graph._thread.undo_log), dict(graph._uncommitted))


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny convolutions on a shared 2-core machine run faster and steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def layer_model(x):
    return sc.separable_conv2d(x, 2, 3, 1, weights_regularizer=sc.l2_regularizer(0.1),
                               biases_regularizer=sc.l1_regularizer(0.1))


def test_100k_template_calls_add_nothing_and_do_not_grow_memory(one_thread):
    graph = sc.Graph()
    x = torch.randn(1, 3, 3, 2, generator=torch.Generator().manual_seed(0))
    with graph.as_default(), torch.no_grad():
        model = sc.make_template("model", layer_model)
        first_output = model(x)
        after_first = graph_state(graph)
        assert len(after_first[0]) == 3 and after_first[-1] == {}
        assert len(graph.get_collection(sc.GraphKeys.REGULARIZATION_LOSSES)) == 3
        for _ in range(WARMUP_CALLS - 1):
            model(x)
        gc.collect()
        rss_before, objects_before = rss_mib(), len(gc.get_objects())
        for done in range(WARMUP_CALLS, CALLS, CHECK_EVERY):
            for _ in range(min(CHECK_EVERY, CALLS - done)):
                output = model(x)
            assert graph_state(graph) == after_first
        gc.collect()
        rss_growth, object_growth = rss_mib() - rss_before, len(gc.get_objects()) - objects_before
    assert torch.equal(output, first_output)  # same weights, same input, same bits
    print(f"\n{CALLS} template calls: RSS growth {rss_growth:.2f} MiB (bound {RSS_BOUND_MIB}), "
          f"gc objects growth {object_growth} (bound {OBJECT_BOUND})")
    assert rss_growth <= RSS_BOUND_MIB
    assert object_growth <= OBJECT_BOUND


def training_model(x):
    net = sc.separable_conv2d(x, 4, 3, 1, weights_regularizer=sc.l2_regularizer(0.01),
                              normalizer_fn=sc.batch_norm,
                              normalizer_params={"is_training": True, "scale": True, "decay": 0.9})
    return sc.separable_conv2d(net, 2, 3, 1, stride=2, activation_fn=None,
                               weights_regularizer=sc.l2_regularizer(0.01))


def test_training_loop_with_batch_norm_adds_nothing_and_does_not_grow_memory(one_thread):
    """Forward, regularized loss, backward and an SGD step: the autograd path must not leak either."""
    graph = sc.Graph()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, 6, 3, generator=gen)
    target = torch.randn(4, 3, 3, 2, generator=gen)
    with graph.as_default():
        model = sc.make_template("net", training_model)
        model(x)
        after_first = graph_state(graph)
        variables = sc.trainable_variables()
        optimizer = torch.optim.SGD(variables, lr=0.01)

        def step():
            optimizer.zero_grad()
            loss = torch.mean((model(x) - target) ** 2) + sc.get_regularization_loss()
            loss.backward()
            optimizer.step()
            return float(loss.detach())

        first_losses = [step() for _ in range(WARMUP_STEPS)]
        gc.collect()
        rss_before, objects_before = rss_mib(), len(gc.get_objects())
        losses = [step() for _ in range(TRAINING_STEPS)]
        gc.collect()
        rss_growth, object_growth = rss_mib() - rss_before, len(gc.get_objects()) - objects_before
        assert graph_state(graph) == after_first
        assert len(sc.get_collection(sc.GraphKeys.REGULARIZATION_LOSSES)) == 4
    assert losses[-1] < first_losses[0]  # it trained, with finite numbers throughout
    assert all(loss == loss and abs(loss) != float("inf") for loss in losses)
    print(f"\n{TRAINING_STEPS} training steps: RSS growth {rss_growth:.2f} MiB, gc objects growth {object_growth}")
    assert rss_growth <= RSS_BOUND_MIB
    assert object_growth <= OBJECT_BOUND
