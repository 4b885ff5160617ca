"""``python -m sepconv demo``: train a small MobileNet on scikit-learn's digits.

The network is TF1/slim code on sepconv (``sc.separable_conv2d`` under
``sc.arg_scope`` with ``sc.batch_norm`` and an L2 regularizer, wrapped in
``sc.make_template``), trained with ``torch.optim``. The run prints a falling
loss and the test accuracy, writes loss/accuracy curves to a PNG and a TF
checkpoint, restores the checkpoint into a fresh ``sc.Graph()`` and checks
that the restored model predicts exactly what the trained one does.

Data parallel: ``torchrun --nproc_per_node=2 -m sepconv demo`` trains on two
processes (gloo); each takes its shard of every global batch, the gradients
are summed across ranks and the batch-norm statistics are those of the whole
global batch, so the run computes what one process would. Rank 0 prints and
writes the files.
"""
import argparse
import json
import os
import time

import torch

import sepconv as sc

from . import demo_data, demo_dist, demo_model, demo_report, demo_train

DEFAULT_OUT = "demo-output"
CHECKPOINT_NAME = "model.ckpt"


def build_parser():
    """The demo's command line; every flag has a help text."""
    parser = argparse.ArgumentParser(
        prog="python -m sepconv demo",
        description="Train a small MobileNet of sepconv separable layers on scikit-learn's "
                    "digits, write curves and a TF checkpoint, and check the restored model.",
        epilog=__doc__.split("\n\n")[2].replace("``", ""),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--epochs", type=_positive_int, default=30,
                        help="passes over the 1,437 training digits")
    parser.add_argument("--batch-size", type=_positive_int, default=64,
                        help="global batch size (split across ranks under torchrun)")
    parser.add_argument("--lr", type=_positive_float, default=0.1,
                        help="initial learning rate of SGD with Nesterov momentum 0.9, "
                             "decayed to 0 by a cosine schedule")
    parser.add_argument("--weight-decay", type=_non_negative_float, default=1e-4,
                        help="scale of sc.l2_regularizer on every weight (0 disables it)")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="seed of the train/test split, the initial weights, the shuffling "
                             "and the random shifts")
    parser.add_argument("--threads", type=_positive_int, default=1,
                        help="torch intra-op threads per process; the layers are so small "
                             "that one thread is fastest (torchrun's processes use the cores)")
    parser.add_argument("--max-steps", type=_non_negative_int, default=0,
                        help="stop after this many optimizer steps (0: run all epochs); "
                             "for quick checks")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="directory for curves.png, metrics.json and the checkpoint")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar and no per-epoch lines; only the final results")
    return parser


def _positive_int(text):
    return _checked(text, int, lambda v: v >= 1, "an int >= 1")


def _non_negative_int(text):
    return _checked(text, int, lambda v: v >= 0, "an int >= 0")


def _seed(text):
    # scikit-learn's split takes seeds in [0, 2**32 - 1]
    return _checked(text, int, lambda v: 0 <= v < 2**32, "an int in [0, 4294967295]")


def _positive_float(text):
    return _checked(text, float, lambda v: v > 0, "a float > 0")


def _non_negative_float(text):
    return _checked(text, float, lambda v: v >= 0, "a float >= 0")


def _checked(text, kind, valid, expected):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not valid(value):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {expected}")
    return value


def main(argv=None):
    """Runs the demo; returns 0 on success, 1 if the restored model disagrees."""
    parser = build_parser()
    config = parser.parse_args(argv)
    context = demo_dist.init_from_env()
    threads = torch.get_num_threads()
    # A graph of its own and a forked RNG: calling main() twice in one process
    # (as the tests do) neither mixes two models' variables nor moves torch's seed.
    try:
        problem = config_problem(config, context)
        if problem:
            parser.error(problem)  # every rank exits with status 2, before any training
        with sc.Graph().as_default(), torch.random.fork_rng(devices=[]):
            return _run(config, context)
    finally:
        torch.set_num_threads(threads)
        demo_dist.shutdown(context)


def config_problem(config, context):
    """What makes ``config`` unusable for this run, as a one-line message; else None.

    Creates ``--out`` (every rank, so that none starts training alone).
    """
    if config.batch_size < context.world_size:
        return (f"argument --batch-size: invalid value {config.batch_size}: must be at least the "
                f"number of processes ({context.world_size})")
    try:
        os.makedirs(config.out, exist_ok=True)
    except OSError as error:
        return f"argument --out: cannot create directory {config.out!r}: {error.strerror}"
    return None


def _run(config, context):
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)  # initial weights; rank 0's are broadcast anyway
    train_set, test_set = demo_data.load_split(config.seed)
    if context.is_chief and not config.quiet:
        print(f"digits: {len(train_set[0])} train / {len(test_set[0])} test; "
              f"{context.world_size} process(es) x {config.threads} thread(s)", flush=True)
    model = demo_model.build_model(config.weight_decay, distributed=context.distributed)
    started = time.perf_counter()
    with demo_report.progress_bar(demo_train.planned_steps(len(train_set[0]), config),
                                  enabled=context.is_chief and not config.quiet) as progress:
        history = demo_train.train(model, train_set, test_set, config, context, progress)
    seconds = time.perf_counter() - started
    if not context.is_chief:
        return 0
    return _finish(model, history, test_set, config, seconds)


def _finish(model, history, test_set, config, seconds):
    """Rank 0: report, write curves and checkpoint, check the restored model."""
    x_test, y_test = test_set
    predictions = demo_train.predict(model, x_test)
    trained_accuracy = demo_train.accuracy(predictions, y_test)
    prefix = demo_report.save_checkpoint(os.path.join(config.out, CHECKPOINT_NAME))
    restored = demo_report.restore_and_predict(prefix, config.weight_decay, x_test)
    restored_accuracy = demo_train.accuracy(restored, y_test)
    curves = demo_report.plot_curves(history, os.path.join(config.out, "curves.png"))
    same = bool(torch.equal(predictions, restored))
    _write_metrics(config, history, trained_accuracy, restored_accuracy, same, seconds)
    print(f"loss {history.step_loss[0]:.4f} at step 1 -> {history.epoch_loss[-1]:.4f} "
          f"(last epoch's mean) in {len(history.step_loss)} steps, {seconds:.1f} s")
    print(f"test accuracy: trained {trained_accuracy:.2%}, restored from {prefix} "
          f"into a fresh sc.Graph() {restored_accuracy:.2%}")
    print(f"predictions identical: {same}; curves: {curves}", flush=True)
    return 0 if same else 1


def _write_metrics(config, history, trained_accuracy, restored_accuracy, same, seconds):
    metrics = dict(step_loss=history.step_loss, epoch_loss=history.epoch_loss,
                   test_accuracy=history.test_accuracy, trained_accuracy=trained_accuracy,
                   restored_accuracy=restored_accuracy, restored_predictions_identical=same,
                   train_seconds=seconds, config=vars(config))
    with open(os.path.join(config.out, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=1)

