"""The demo's outputs: progress bar, curves PNG, TF checkpoint and its restore check."""
import contextlib
import sys

import sepconv as sc

from . import demo_model, demo_train


def _saver():
    from . import train as tf_train  # sc.train: TF1's name-based checkpoints
    return tf_train.Saver()


@contextlib.contextmanager
def progress_bar(total, enabled):
    """A tqdm bar on stderr, disabled unless ``enabled`` and stderr is a terminal.

    A disabled bar still accepts ``update``/``set_postfix``/``write``, so the
    training loop does not branch on it.
    """
    from tqdm import tqdm

    bar = tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True,
               disable=not (enabled and sys.stderr.isatty()))
    try:
        yield bar
    finally:
        bar.close()


def plot_curves(history, path):
    """Writes the per-step training loss and the per-epoch test accuracy to ``path`` (PNG)."""
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed
    from matplotlib import pyplot as plt

    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axes.plot(range(1, len(history.step_loss) + 1), history.step_loss, linewidth=0.8)
    loss_axes.set(title="training loss (cross-entropy + L2)", xlabel="step", ylabel="loss",
                  yscale="log")
    epochs = range(1, len(history.test_accuracy) + 1)
    accuracy_axes.plot(epochs, [100 * a for a in history.test_accuracy], marker="o", markersize=3)
    accuracy_axes.set(title="test accuracy", xlabel="epoch", ylabel="%")
    accuracy_axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def save_checkpoint(path):
    """Saves the default graph's global variables as a TF V2 checkpoint; returns the prefix."""
    return _saver().save(path)


def restore_and_predict(prefix, weight_decay, images):
    """Builds the model again in a fresh ``sc.Graph()``, restores ``prefix``, predicts ``images``.

    The fresh graph shares nothing with the trained one: its variables are
    created anew by the template's first call, then overwritten by the
    checkpoint's values (weights and batch-norm moving statistics).
    """
    with sc.Graph().as_default():
        model = demo_model.build_model(weight_decay, distributed=False)
        model(images[:1], is_training=False)  # creates the variables
        _saver().restore(prefix)
        return demo_train.predict(model, images)
