"""The one training loop of stpredict: optimiser, epochs, validation, early stopping, progress, history, resume."""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

import numpy as np
import torch

from .._core._validate import check_number
from .._logging import logger
from .._progress import tqdm
from .._types import LRSchedule, check_choice
from ._distributed import Distributed, training_batchnorms

__all__ = ["TrainingPlan", "check_ema", "fit"]


def check_ema(ema: float | None) -> float | None:
    """``ema`` as a decay in (0, 1), or ``None`` for no average of the weights (also for ``ema=0``)."""
    if ema is None:
        return None
    v = check_number("ema", ema, minimum=0, inclusive=True)
    if v >= 1:
        raise ValueError(f"`ema` must be a decay between 0 and 1 (e.g. 0.99), or 0 for none, got {ema!r}.")
    return None if v == 0 else v


class TrainingPlan(Protocol):
    """What a model hands the loop: its network, one training step and (optionally) a validation pass."""

    net: torch.nn.Module

    @property
    def has_validation(self) -> bool:
        """Whether :meth:`validate` has data to score."""
        ...

    def on_epoch_start(self) -> None:
        """Called after ``net.train()`` at the start of each epoch (e.g. keep a frozen encoder in eval mode)."""
        ...

    def training_step(self) -> tuple[torch.Tensor, float]:
        """Draw a batch and return its loss (with graph) and batch PCC."""
        ...

    def validate(self) -> dict[str, float]:
        """``{"val_loss": …, …}`` over the validation data."""
        ...


def fit(
    model: Any,
    plan: TrainingPlan,
    *,
    device: torch.device,
    max_epochs: int,
    steps_per_epoch: int,
    lr: float,
    weight_decay: float,
    patience: int | None,
    progress: bool,
    desc: str = "training",
    ema: float | None = None,
    lr_schedule: LRSchedule = "constant",
    dist: Distributed | None = None,
) -> list[dict]:
    """Train ``plan.net`` in place with Adam; the epoch loop every trained stpredict model shares.

    Each epoch runs ``steps_per_epoch`` steps, then validates when the plan has validation data. One
    record per epoch (``epoch``, ``train_loss``, ``train_pcc``, ``seconds`` and the validation metrics)
    is appended to ``model.history`` and the optimiser state is kept in ``model.optimizer_state``, so
    a saved model resumes where it stopped. With ``patience`` (and validation) training stops after
    that many epochs without a better validation loss and the best weights are restored. With ``progress``
    an epoch bar named ``desc`` shows the last losses, above a bar of the current epoch's steps.

    With ``ema`` (a decay in (0, 1), e.g. 0.99) an exponential moving average of the trained parameters
    is kept, with the usual warm-up ``min(ema, (1 + t) / (10 + t))`` at optimiser step ``t`` (counted
    on when the optimiser state is resumed); validation scores the averaged weights and they are the
    weights the network keeps at the end (a later call continues from them). Buffers (batch-norm
    statistics) are not averaged: they already are running averages.

    ``lr`` and ``weight_decay`` are this call's even when the optimiser state is resumed (Adam's moments
    and step count carry over). ``lr_schedule="cosine"`` decays the learning rate over this call's
    ``max_epochs × steps_per_epoch`` steps from ``lr`` to ``lr / 100`` along half a cosine;
    ``"constant"`` keeps ``lr``.

    With ``dist`` (data-parallel training under ``torchrun``; the plan built with the same ``dist``
    shares each step's global batch out) every rank starts from rank 0's weights, the gradients are
    summed over ranks after each backward pass (each rank's is its share of the whole batch's), so all
    ranks take the same optimiser steps; validation metrics are rank 0's on every rank, so early
    stopping agrees. The running statistics of batch-norm layers in training mode (an unfrozen
    BatchNorm encoder) are averaged over ranks after each step, but each rank normalised its own
    tiles: such a network does not train exactly as in one process.

    Returns
    -------
    The records of this call.

    """
    net = plan.net.to(device)
    if dist is not None:
        dist.broadcast_state(net)
    params = [p for p in net.parameters() if p.requires_grad]
    # foreach: one kernel per step for all parameters (PyTorch default on CUDA; the step ~40% faster on CPU too)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)
    if model.optimizer_state is not None:
        opt.load_state_dict(model.optimizer_state)
        for group in opt.param_groups:  # this call's settings, not the saved ones
            group["lr"], group["weight_decay"] = lr, weight_decay
    check_choice("lr_schedule", lr_schedule, LRSchedule)
    total = max_epochs * steps_per_epoch
    step_lr = (
        (lambda t: lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t / max(total - 1, 1)))))
        if lr_schedule == "cosine"
        else None
    )
    t_call = 0
    averaged = None
    if check_ema(ema) is not None:  # the warm-up counts on from a resumed optimiser's steps
        done = opt.state.get(params[0], {}).get("step", 0) if params else 0
        averaged = _Average(params, ema, steps=int(done))
    validate = plan.has_validation
    best, best_state, bad = np.inf, None, 0
    history: list[dict] = []
    start_epoch = len(model.history)
    epochs = tqdm(range(max_epochs), desc=desc, progress=progress, unit="epoch")
    try:
        for epoch in epochs:
            net.train()
            plan.on_epoch_start()
            batchnorms = training_batchnorms(net) if dist is not None else []
            if batchnorms and epoch == 0 and dist.is_main:
                logger.warning(
                    f"{len(batchnorms)} batch-norm layers train in data-parallel training: each process "
                    "normalises its own tiles (their running statistics are averaged), so the result differs "
                    "from one process's; freeze the encoder or use one without batch norm for the same result."
                )
            t0 = time.perf_counter()
            losses, pccs = [], []
            bar = tqdm(
                range(steps_per_epoch),
                desc=f"epoch {start_epoch + epoch + 1}",
                progress=progress,
                leave=False,
            )
            for _ in bar:
                if step_lr is not None:
                    for group in opt.param_groups:
                        group["lr"] = step_lr(t_call)
                t_call += 1
                loss, pcc = plan.training_step()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if dist is not None:
                    dist.sum_gradients(params)
                opt.step()
                if batchnorms:
                    dist.average_batchnorm(batchnorms)
                if averaged is not None:
                    averaged.update()
                losses.append(float(loss.detach()))
                pccs.append(pcc)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            rec = {
                "epoch": start_epoch + epoch + 1,
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
                "train_pcc": float(np.mean(pccs)) if pccs else float("nan"),
                "seconds": time.perf_counter() - t0,
            }
            stop = False
            if validate:
                net.eval()
                if averaged is not None:
                    averaged.swap()  # score (and keep, if best) the averaged weights
                metrics = plan.validate()
                rec.update(metrics if dist is None else dist.broadcast(metrics))
                if patience is not None:
                    if rec["val_loss"] < best - 1e-6:
                        best, bad = rec["val_loss"], 0
                        best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                    else:
                        bad += 1
                        stop = bad >= patience
                if averaged is not None:
                    averaged.swap()
            history.append(rec)
            model.history.append(rec)
            epochs.set_postfix(
                {k: f"{v:.4f}" for k, v in rec.items() if k in ("train_loss", "val_loss", "val_pcc")},
                refresh=False,
            )
            model.optimizer_state = opt.state_dict()
            if stop:
                break
        if averaged is not None:
            averaged.swap()
        if best_state is not None:
            net.load_state_dict(best_state)
    finally:
        epochs.close()
        net.eval()
        net.cpu()
    return history


class _Average:
    """Exponential moving average of parameters, swappable with them in place."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float, steps: int = 0) -> None:
        self.params = params
        self.decay = decay
        self.avg = [p.detach().clone() for p in params]
        self.steps = steps

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        torch._foreach_lerp_(self.avg, [p.detach() for p in self.params], 1 - d)

    @torch.no_grad()
    def swap(self) -> None:
        for p, a in zip(self.params, self.avg, strict=True):
            tmp = p.detach().clone()
            p.copy_(a)
            a.copy_(tmp)
