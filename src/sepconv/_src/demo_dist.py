"""Data parallelism for the demo: process group, gradient and moment all-reduces.

``torchrun --nproc_per_node=N -m sepconv demo`` sets ``WORLD_SIZE``, ``RANK``
and the rendezvous variables; the demo then joins a gloo process group (CPU)
and each rank trains on its shard of every global batch. Without those
variables (or with ``WORLD_SIZE=1``) everything here is a no-op for one rank.
"""
import dataclasses
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class Context:
    """Where this process stands in the run: ``rank`` of ``world_size``."""

    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self):
        """Whether there is more than one rank."""
        return self.world_size > 1

    @property
    def is_chief(self):
        """Rank 0 prints and writes the files."""
        return self.rank == 0


def init_from_env(environ=None):
    """Joins the gloo process group when torchrun says there is more than one rank.

    Example:
        >>> init_from_env({})
        Context(rank=0, world_size=1)
    """
    environ = os.environ if environ is None else environ
    world_size = int(environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context()
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size())


def shutdown(context):
    """Leaves the process group, if one was joined."""
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_variables(variables, context):
    """Makes every rank start from rank 0's values."""
    if context.distributed:
        with torch.no_grad():
            for variable in variables:
                dist.broadcast(variable.data, src=0)


def sum_gradients_and_loss(variables, loss, context):
    """Sums every rank's gradients in place; returns the loss summed over ranks.

    One flat all-reduce carries all gradients and the loss value. Each rank's
    loss is its share of the global objective (see ``demo_train``), so the
    sums are exactly the gradient and value of the global objective.
    """
    if not context.distributed:
        return float(loss.detach())
    grads = [v.grad if v.grad is not None else torch.zeros_like(v) for v in variables]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1)])
    dist.all_reduce(flat)
    offset = 0
    for variable, grad in zip(variables, grads):
        count = grad.numel()
        variable.grad = flat[offset:offset + count].view_as(grad).clone()
        offset += count
    return float(flat[-1])


class _AllReduceSum(torch.autograd.Function):
    """A differentiable sum over ranks.

    Every rank gets ``y = sum_r x_r``; the objective is the sum of the ranks'
    objectives, so the gradient of ``x_r`` is the sum over ranks of the
    gradients of ``y``: the backward is an all-reduce too.
    """

    @staticmethod
    def forward(ctx, tensor):
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        return _AllReduceSum.apply(grad_output)


def global_moments(inputs, reduce_dims):
    """Mean, biased variance and element count per channel over every rank's ``inputs``.

    The channel axis must be the last one (NHWC). One all-reduce carries the
    per-channel sums, sums of squares and the count (and one more carries
    their gradients back, see :class:`_AllReduceSum`): the collectives, not
    the arithmetic, are what a step of this small network waits for. The
    sums accumulate in float64, so ``E[x^2] - E[x]^2`` loses nothing to
    cancellation at float32 precision.
    """
    channels = inputs.shape[-1]
    local_count = inputs.numel() // max(channels, 1)
    local = torch.cat([inputs.sum(reduce_dims, dtype=torch.float64),
                       inputs.square().sum(reduce_dims, dtype=torch.float64),
                       inputs.new_tensor([local_count], dtype=torch.float64)])
    totals = _AllReduceSum.apply(local)
    count = float(totals[-1].detach())
    mean = totals[:channels] / count
    variance = (totals[channels:2 * channels] / count - mean.square()).clamp_min(0.0)
    return mean.to(inputs.dtype), variance.to(inputs.dtype), count
