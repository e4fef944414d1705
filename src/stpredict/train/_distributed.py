"""Data-parallel training under ``torchrun``: one global batch shared out, its loss and gradient as one process's.

Every rank draws the same global batch (the samplers share the seed), forwards its contiguous share of
the tiles, and the footprint predictions of all ranks are gathered so that each rank computes the loss
of the *whole* batch (the PCC term is over the batch and does not split into sub-batches). Only the
rank's own rows carry a graph, so its backward pass gives its share of the gradient; the shares are
summed over ranks (an all-reduce), which is the single-process gradient up to floating-point order.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .._logging import logger

__all__ = ["Distributed", "distributed_from_env", "is_main_process", "quiet_other_ranks"]


def _env_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """Whether this process is rank 0 of a ``torchrun`` launch (or not launched by one): the one that writes files."""
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        return tdist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class Distributed:
    """The process group a data-parallel training runs in: this process's ``rank`` of ``world`` and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that shows progress and writes files."""
        return self.rank == 0

    def share(self, n: int) -> slice:
        """The contiguous share of this rank among ``n`` items (the first ``n % world`` ranks take one more)."""
        return _share(n, self.rank, self.world)

    def sizes(self, counts: Sequence[int]) -> list[int]:
        """Per rank, the sum of ``counts`` over its share of the items ``counts`` describes."""
        return [int(sum(counts[_share(len(counts), r, self.world)])) for r in range(self.world)]

    def gather_rows(self, local: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
        """Every rank's rows in rank order, ``(sum(sizes), …)``; only this rank's rows keep their graph.

        ``sizes`` are the row counts of every rank (known on each rank, as every rank holds the global batch).
        """
        import torch.distributed as tdist

        if local.shape[0] != sizes[self.rank]:
            raise RuntimeError(f"rank {self.rank} has {local.shape[0]} rows, expected {sizes[self.rank]}")
        n = max(sizes)
        buf = local.detach()
        if n > buf.shape[0]:  # all_gather takes tensors of one shape
            buf = torch.cat([buf, buf.new_zeros((n - buf.shape[0], *buf.shape[1:]))])
        out = [torch.empty_like(buf) for _ in range(self.world)]
        tdist.all_gather(out, buf.contiguous())
        return torch.cat([local if r == self.rank else out[r][:c] for r, c in enumerate(sizes)])

    @torch.no_grad()
    def sum_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum the gradients of ``params`` over ranks in place (one all-reduce of a flat buffer)."""
        import torch.distributed as tdist

        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        tdist.all_reduce(flat)
        torch._foreach_copy_(
            grads, [v.view_as(g) for v, g in zip(flat.split([g.numel() for g in grads]), grads, strict=True)]
        )

    @torch.no_grad()
    def broadcast_state(self, net: torch.nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers (so that all start from the same weights)."""
        import torch.distributed as tdist

        for t in [*net.parameters(), *net.buffers()]:
            tdist.broadcast(t.data, src=0)

    @torch.no_grad()
    def average_batchnorm(self, layers: Sequence[torch.nn.Module]) -> None:
        """Average the running statistics of batch-norm ``layers`` over ranks (:func:`training_batchnorms`)."""
        import torch.distributed as tdist

        for m in layers:
            for t in (m.running_mean, m.running_var):
                tdist.all_reduce(t)
                t.div_(self.world)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (e.g. validation metrics, so that early stopping agrees)."""
        import torch.distributed as tdist

        box = [obj]
        tdist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]


def _share(n: int, rank: int, world: int) -> slice:
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def training_batchnorms(net: torch.nn.Module) -> list[torch.nn.Module]:
    """Batch-norm layers of ``net`` in training mode that keep running statistics."""
    from torch.nn.modules.batchnorm import _BatchNorm

    return [
        m
        for m in net.modules()
        if isinstance(m, _BatchNorm) and m.training and m.track_running_stats and m.running_mean is not None
    ]


def distributed_from_env(distributed: bool | None, device: torch.device) -> Distributed | None:
    """The process group of a ``torchrun`` launch, initialised if needed, or ``None`` to train alone.

    Parameters
    ----------
    distributed
        ``None``: data-parallel when launched by ``torchrun`` with more than one process (``WORLD_SIZE``
        > 1); ``True``: require such a launch; ``False``: train alone even under ``torchrun``.
    device
        The resolved training device; with CUDA each rank takes ``cuda:LOCAL_RANK``.

    Returns
    -------
    The rank, world size and device of this process, or ``None``.

    """
    import torch.distributed as tdist

    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"`distributed` must be True, False or None, got {distributed!r}.")
    initialised = tdist.is_available() and tdist.is_initialized()
    world = tdist.get_world_size() if initialised else _env_world()
    if distributed is False or (distributed is None and world <= 1):
        return None
    if world <= 1:
        raise RuntimeError(
            "distributed=True needs a launch by torchrun with several processes, e.g. "
            "`torchrun --nproc_per_node 4 -m stpredict train ...` (WORLD_SIZE is "
            f"{os.environ.get('WORLD_SIZE')!r})."
        )
    if not tdist.is_available():  # pragma: no cover - builds without torch.distributed
        raise RuntimeError("This PyTorch build has no torch.distributed; train with distributed=False.")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"Data-parallel training runs on CUDA (NCCL) or the CPU (gloo), not on {device}.")
    if not initialised:
        backend = "nccl" if device.type == "cuda" else "gloo"
        tdist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
        atexit.register(_destroy)
        logger.info(f"Initialised the {backend} process group: {tdist.get_world_size()} processes.")
    dist = Distributed(tdist.get_rank(), tdist.get_world_size(), device)
    if not dist.is_main:
        quiet_other_ranks()
    return dist


class _WarningsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def quiet_other_ranks() -> None:
    """Keep only warnings and errors of the package logger in this process unless it is rank 0 (idempotent)."""
    if is_main_process() or any(isinstance(f, _WarningsOnly) for f in logger.filters):
        return
    logger.addFilter(_WarningsOnly())


def _destroy() -> None:
    import torch.distributed as tdist

    if tdist.is_initialized():
        tdist.destroy_process_group()
