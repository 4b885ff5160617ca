"""The demo's training loop: the TF1 idiom of one model template, two call sites.

``model(images, is_training=True)`` builds (first call) or reuses the
variables for a training step; ``model(images, is_training=False)`` is the
evaluation call site on the same variables. The optimizer is a
``torch.optim`` one on ``sc.trainable_variables()``; the objective adds
``sc.get_regularization_loss()`` (the L2 penalties the arg scope attached to
every weight) to the cross-entropy, every step. Training images are shifted
by up to a pixel (the test set is not), which is worth about half a point of
test accuracy on the digits.
"""
import dataclasses
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

import sepconv as sc

from . import demo_data, demo_dist


@dataclasses.dataclass
class History:
    """What the run measured: per-step loss, per-epoch test accuracy."""

    step_loss: list = dataclasses.field(default_factory=list)
    epoch_loss: list = dataclasses.field(default_factory=list)
    test_accuracy: list = dataclasses.field(default_factory=list)


def make_optimizer(variables, lr, total_steps):
    """SGD with Nesterov momentum and a cosine decay of the learning rate to 0."""
    optimizer = torch.optim.SGD(variables, lr=lr, momentum=0.9, nesterov=True)
    def cosine(step):
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    return optimizer, schedule


def train_step(model, variables, optimizer, images, labels, global_batch_size, context):
    """One optimizer step on this rank's shard; returns the global objective's value.

    Each rank's loss is its share of the global objective: the sum of its
    examples' cross-entropies over the *global* batch size, plus the penalty
    over the number of ranks. Summed over ranks (gradients included, see
    :func:`demo_dist.sum_gradients_and_loss`) that is exactly the mean
    cross-entropy of the global batch plus the penalty, as in one process,
    also when the last batch does not split evenly.
    """
    logits = model(images, is_training=True)
    cross_entropy = F.cross_entropy(logits, labels, reduction="sum") / global_batch_size
    loss = cross_entropy + sc.get_regularization_loss() / context.world_size
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    value = demo_dist.sum_gradients_and_loss(variables, loss, context)
    optimizer.step()
    return value


@torch.no_grad()
def predict(model, images, batch_size=512):
    """Class predictions of the evaluation call site (moving BN statistics)."""
    return torch.cat([model(images[start:start + batch_size], is_training=False).argmax(dim=1)
                      for start in range(0, len(images), batch_size)])


def accuracy(predictions, labels):
    """Fraction of correct predictions."""
    return float((predictions == labels).float().mean())


def train(model, train_set, test_set, config, context, progress):
    """Runs ``config.epochs`` epochs (or ``config.max_steps`` steps); returns the History.

    ``progress`` is a tqdm bar (possibly disabled); per-epoch lines go
    through it so they do not break the bar.
    """
    x_train, y_train = train_set
    # The first call of a template creates its variables; the optimizer needs them now.
    model(x_train[:2], is_training=False)
    variables = sc.trainable_variables()
    demo_dist.broadcast_variables(sc.global_variables(), context)
    total_steps = planned_steps(len(x_train), config)
    optimizer, schedule = make_optimizer(variables, config.lr, total_steps)
    history = History()
    for epoch in range(config.epochs):
        batches = demo_data.global_batches(len(x_train), config.batch_size, config.seed, epoch)
        losses = []
        for index, batch in enumerate(batches[:total_steps - len(history.step_loss)]):
            images = demo_data.random_shifts(x_train[batch], config.seed, epoch, index)
            local = torch.from_numpy(demo_data.shard(np.arange(len(batch)), context.rank,
                                                     context.world_size))
            losses.append(train_step(model, variables, optimizer, images[local],
                                     y_train[batch][local], len(batch), context))
            schedule.step()
            progress.update(1)
            progress.set_postfix(loss=f"{losses[-1]:.4f}")
        _end_epoch(model, test_set, history, losses, f"epoch {epoch + 1:3d}/{config.epochs}",
                   progress if context.is_chief and not config.quiet else None)
        if len(history.step_loss) == total_steps:
            break
    return history


def _end_epoch(model, test_set, history, losses, label, progress):
    history.step_loss.extend(losses)
    history.epoch_loss.append(sum(losses) / max(len(losses), 1))
    history.test_accuracy.append(accuracy(predict(model, test_set[0]), test_set[1]))
    if progress is not None:
        progress.write(f"{label}  loss {history.epoch_loss[-1]:.4f}  "
                       f"test accuracy {history.test_accuracy[-1]:.2%}", file=sys.stdout)


def planned_steps(num_examples, config):
    """Optimizer steps the run will take: all epochs, capped by ``config.max_steps``.

    Example:
        >>> import types
        >>> planned_steps(1437, types.SimpleNamespace(batch_size=64, epochs=2, max_steps=0))
        46
    """
    steps = math.ceil(num_examples / config.batch_size) * config.epochs
    return min(steps, config.max_steps) if config.max_steps else steps
