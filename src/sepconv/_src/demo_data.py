"""scikit-learn's digits for the demo: a fixed split, global batches, shifts, rank shards.

The digits (1,797 grayscale 8x8 images, 10 classes) ship inside scikit-learn,
so the demo needs no download. Every rank of a data-parallel run derives the
same shuffled, randomly shifted global batches from the seed and takes its
own contiguous slice of each, so the ranks together see exactly the batch one
process would.
"""
import numpy as np
import torch

TEST_FRACTION = 0.2
NUM_CLASSES = 10
_PIXEL_MAX = 16.0  # digits pixels are integers 0..16


def load_split(seed):
    """The train and test sets as NHWC float32 tensors in [0, 1] and int64 labels.

    The split is stratified and fixed by ``seed``: 1,437 train, 360 test.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = load_split(seed=0)
        >>> tuple(x_train.shape), tuple(x_test.shape), int(y_test.max())
        ((1437, 8, 8, 1), (360, 8, 8, 1), 9)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / _PIXEL_MAX).astype(np.float32)[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=TEST_FRACTION, random_state=seed,
        stratify=digits.target)
    return _as_tensors(x_train, y_train), _as_tensors(x_test, y_test)


def _as_tensors(images, labels):
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64))


def global_batches(num_examples, batch_size, seed, epoch):
    """Index arrays of one epoch's global batches, shuffled by ``(seed, epoch)``.

    The last batch is smaller when ``batch_size`` does not divide
    ``num_examples``: every example is seen once per epoch.

    Example:
        >>> [len(b) for b in global_batches(10, 4, seed=0, epoch=0)]
        [4, 4, 2]
    """
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return [order[start:start + batch_size] for start in range(0, num_examples, batch_size)]


def shard(indices, rank, world_size):
    """This rank's contiguous slice of a global batch (sizes differ by at most 1).

    Example:
        >>> [shard(np.arange(5), r, 2).tolist() for r in range(2)]
        [[0, 1, 2], [3, 4]]
    """
    return np.array_split(indices, world_size)[rank]


def random_shifts(images, seed, epoch, batch_index, max_shift=1):
    """``images`` (NHWC) each moved by up to ``max_shift`` pixels, zeros filling in.

    The shifts are drawn from ``(seed, epoch, batch_index)``: every rank shifts
    the whole global batch identically before taking its shard, so the data
    stay those of one process.

    Example:
        >>> x = torch.zeros(4, 3, 3, 1)
        >>> x[:, 1, 1] = 1.0  # a centred dot moves to a random neighbouring pixel
        >>> [tuple(map(int, torch.nonzero(image[..., 0])[0])) for image in random_shifts(x, 0, 0, 0)]
        [(1, 2), (2, 2), (0, 1), (0, 2)]
    """
    count, height, width, _ = images.shape
    rng = np.random.default_rng([seed, epoch, batch_index, 1])
    dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, count))
    padded = torch.nn.functional.pad(images, (0, 0, max_shift, max_shift, max_shift, max_shift))
    rows = torch.from_numpy(dy)[:, None] + torch.arange(height)[None, :]
    cols = torch.from_numpy(dx)[:, None] + torch.arange(width)[None, :]
    return padded[torch.arange(count)[:, None, None], rows[:, :, None], cols[:, None, :]]
