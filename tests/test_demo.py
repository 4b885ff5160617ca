"""``python -m sepconv demo``: an end-to-end run, its command line, and data parallelism.

The runs use a tiny config (a few steps) so the file stays quick; the full
demo's accuracy is measured by running it, not here.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist

import sepconv as sc
from sepconv import __main__ as cli
from sepconv._src import demo, demo_data, demo_dist, demo_model
from sepconv._src import train as tf_train

TINY = ["--epochs", "2", "--max-steps", "8", "--batch-size", "64", "--quiet"]
FLAGS = ["--epochs", "--batch-size", "--lr", "--weight-decay", "--seed", "--threads",
         "--max-steps", "--out", "--quiet"]
# One float32 ulp at |w| ~ 1 is 1.2e-7, and that is the largest difference
# measured between the 1- and 2-process runs after 8 steps (summation order).
# 1e-5 leaves ~80 ulps of room, while a run whose batch norm used each rank's
# own shard statistics differs by 1.4e-2 after the same 8 steps.
WEIGHT_ATOL = 1e-5


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    before = (torch.get_num_threads(), len(sc.global_variables()), torch.random.get_rng_state())
    status = demo.main(TINY + ["--out", str(out), "--threads", "3"])
    after = (torch.get_num_threads(), len(sc.global_variables()), torch.random.get_rng_state())
    return status, out, before, after


def _metrics(out):
    with open(out / "metrics.json", encoding="utf-8") as f:
        return json.load(f)


def _checkpoint(out):
    reader = tf_train.load_checkpoint(str(out / demo.CHECKPOINT_NAME))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def test_end_to_end_writes_curves_and_checkpoint(single_run):
    status, out, _, _ = single_run
    assert status == 0
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "model.ckpt.index").is_file()
    assert (out / "model.ckpt.data-00000-of-00001").is_file()
    names = set(_checkpoint(out))
    assert "mobilenet_digits/conv0/depthwise_weights" in names
    assert "mobilenet_digits/conv4/BatchNorm/moving_variance" in names


def test_end_to_end_loss_falls_and_restore_matches(single_run):
    _, out, _, _ = single_run
    metrics = _metrics(out)
    losses = metrics["step_loss"]
    assert len(losses) == 8
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert metrics["restored_predictions_identical"] is True
    assert metrics["restored_accuracy"] == metrics["trained_accuracy"]


def test_main_leaves_threads_default_graph_and_seed_alone(single_run):
    _, _, (threads, variables, rng), (threads_after, variables_after, rng_after) = single_run
    assert threads_after == threads
    assert variables_after == variables
    assert torch.equal(rng_after, rng)


def test_batch_smaller_than_world_and_an_unusable_out_are_refused(tmp_path):
    config = demo.build_parser().parse_args(["--batch-size", "2", "--out", str(tmp_path)])
    assert demo.config_problem(config, demo_dist.Context(rank=0, world_size=2)) is None
    assert demo.config_problem(config, demo_dist.Context(rank=1, world_size=4)) == (
        "argument --batch-size: invalid value 2: must be at least the number of processes (4)")
    (tmp_path / "file").write_text("")
    config.out = str(tmp_path / "file" / "sub")
    assert demo.config_problem(config, demo_dist.Context(rank=0, world_size=1)) == (
        f"argument --out: cannot create directory {config.out!r}: Not a directory")


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in FLAGS:
        assert flag in text, flag
    for action in demo.build_parser()._actions:
        assert action.help, action.dest


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--lr", "-1"], ["--batch-size", "x"],
                                  ["--threads", "0"], ["--seed", "-1"], ["--seed", "4294967296"],
                                  ["--out", __file__]])
def test_bad_flags_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert argv[0] in err and "Traceback" not in err


@pytest.fixture
def one_rank_group(tmp_path):
    """A real gloo process group of one rank, so the all-reduces run in-process."""
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _bn_run(normalizer_fn, images):
    with sc.Graph().as_default():
        with sc.variable_scope("layer"):
            out = normalizer_fn(images, is_training=True, decay=0.9, scale=True)
        out.square().sum().backward()
        names = [v.name for v in sc.global_variables()]
        moving = [v.detach().clone() for v in sc.global_variables() if "moving" in v.name]
    return out.detach(), images.grad.clone(), names, moving


def test_cross_replica_batch_norm_is_batch_norm_on_one_rank(one_rank_group):
    images = torch.randn(6, 4, 4, 3, generator=torch.Generator().manual_seed(0))
    expected = _bn_run(sc.batch_norm, images.clone().requires_grad_())
    actual = _bn_run(demo_model.cross_replica_batch_norm, images.clone().requires_grad_())
    torch.testing.assert_close(actual[0], expected[0])
    torch.testing.assert_close(actual[1], expected[1])  # gradients flow through the statistics
    assert actual[2] == expected[2]  # same variables, names and order
    for got, want in zip(actual[3], expected[3]):
        torch.testing.assert_close(got, want)


def test_global_moments_match_var_mean(one_rank_group):
    images = torch.randn(5, 3, 3, 4, generator=torch.Generator().manual_seed(1))
    mean, variance, count = demo_dist.global_moments(images, reduce_dims=(0, 1, 2))
    want_variance, want_mean = torch.var_mean(images, dim=(0, 1, 2), correction=0)
    torch.testing.assert_close(mean, want_mean)
    torch.testing.assert_close(variance, want_variance)
    assert count == 45


def test_two_processes_train_the_same_weights_as_one(single_run, tmp_path):
    _, single_out, _, _ = single_run
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "sepconv", "demo"] + TINY + ["--out", str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    single, double = _checkpoint(single_out), _checkpoint(tmp_path)
    assert sorted(single) == sorted(double)
    for name in single:
        np.testing.assert_allclose(double[name], single[name], rtol=0, atol=WEIGHT_ATOL,
                                   err_msg=name)
    np.testing.assert_allclose(_metrics(tmp_path)["step_loss"], _metrics(single_out)["step_loss"],
                               rtol=1e-5)


def test_random_shifts_move_whole_images_deterministically():
    images = torch.zeros(16, 8, 8, 1)
    images[:, 1:7, 1:7] = torch.rand(16, 6, 6, 1, generator=torch.Generator().manual_seed(0))
    shifted = demo_data.random_shifts(images, seed=0, epoch=1, batch_index=2)
    # A zero border means a shift by one pixel loses nothing: each image keeps its pixels.
    torch.testing.assert_close(shifted.sum(dim=(1, 2, 3)), images.sum(dim=(1, 2, 3)))
    assert not torch.equal(shifted, images)
    assert torch.equal(shifted, demo_data.random_shifts(images, seed=0, epoch=1, batch_index=2))
    assert not torch.equal(shifted, demo_data.random_shifts(images, seed=0, epoch=1, batch_index=3))
