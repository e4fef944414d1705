"""The one ``train`` of every model trained by gradient steps (PixNet, SpotRegressor)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import torch
from spatialdata import SpatialData

from .. import _docs
from .._core._validate import check_int, check_number
from .._settings import settings
from .._types import LRSchedule, check_choice
from ..train import TableTargets, TrainingPlan, fit, training_targets
from ..train._distributed import Distributed, distributed_from_env
from ..train._loop import check_ema
from ._base import BaseModel

__all__ = ["NoTrainOptions", "TrainedModel", "TrainingRun"]


@dataclass
class NoTrainOptions:
    """A model without model-specific training arguments."""


@dataclass
class TrainingRun:
    """What a model's training plan is built from: the sections, their split and the shared arguments."""

    sdatas: list[SpatialData]
    tables: list[str]
    image_keys: list[str]
    train_idx: list[int]
    val_idx: list[int]
    tiles: str | None
    batch_size: int
    augment: bool
    lam: float
    seed: int
    device: torch.device
    progress: bool
    options: Any
    names: list[str]
    dist: Distributed | None = None

    def targets(self, recipe: Any, *, counts: bool = False) -> list[list[TableTargets]]:
        """The checked targets of every section (:func:`stpredict.train.training_targets` on this run's split)."""
        return training_targets(
            self.sdatas,
            image_keys=self.image_keys,
            tables=self.tables,
            recipe=recipe,
            names=self.names,
            train_idx=self.train_idx,
            val_idx=self.val_idx,
            tiles=self.tiles,
            counts=counts,
        )


class TrainedModel(BaseModel):
    """A model trained by gradient steps: one :meth:`train` for every such model.

    Subclasses set ``train_options`` (a dataclass of their own training arguments) and implement
    ``_training_plan``; the loop itself is :func:`stpredict.train.fit`.
    """

    #: Dataclass of the model-specific arguments of :meth:`train` (``**options``).
    train_options: ClassVar[type] = NoTrainOptions
    #: Whether the training plan shares a global batch out over ``torchrun`` processes (``TrainingRun.dist``).
    supports_distributed: ClassVar[bool] = False

    def _training_plan(self, run: TrainingRun) -> TrainingPlan:  # pragma: no cover - abstract
        """The plan (:class:`stpredict.train.TrainingPlan`) that trains :attr:`module` on ``run``."""
        raise NotImplementedError

    @classmethod
    def training_args(cls) -> frozenset[str]:
        fields = {f.name for f in dataclasses.fields(cls.train_options)}
        return super().training_args() | fields

    @_docs.doc_params(
        sdata=_docs.sdatas,
        tables=_docs.tables,
        image_key=_docs.image_keys,
        validation=_docs.validation,
        n_top_genes=_docs.n_top_genes,
        fit=_docs.fit,
        tiles=_docs.tiles,
        seed=_docs.seed,
        device=_docs.device,
        progress=_docs.progress,
    )
    def train(
        self,
        sdata: SpatialData | Sequence[SpatialData],
        *,
        tables: str | Sequence[str],
        image_key: str | Sequence[str] | None = None,
        validation: int | Sequence[int] | None = None,
        n_top_genes: int = 250,
        max_epochs: int = 10,
        steps_per_epoch: int = 50,
        batch_size: int | None = None,
        lr: float | None = None,
        weight_decay: float | None = None,
        ema: float | None = None,
        lr_schedule: LRSchedule | None = None,
        lam: float | None = None,
        patience: int | None = 3,
        augment: bool | None = None,
        tiles: str | None = None,
        seed: int | None = None,
        device: str | None = None,
        progress: bool | None = None,
        distributed: bool | None = None,
        **options: Any,
    ) -> Self:
        """Train on one or several sections with sparse supervision at measured footprints.

        Continues from where a previous call (or a loaded checkpoint) stopped: epochs are numbered on,
        and the optimiser state is restored.

        Parameters
        ----------
        {sdata}
        {tables}
        {image_key}
        {validation}
        {n_top_genes}
        {fit}
        {tiles}
        {seed}
        {device}
        {progress}
        distributed
            Data-parallel training over the processes of a ``torchrun`` launch (see :doc:`/distributed`):
            ``None`` (default) when launched with more than one process, ``True`` to require it,
            ``False`` to train alone in each process. Each step's ``batch_size`` tiles are the global
            batch, shared out over the processes; the result is one process's up to floating-point
            order, and every process ends with the same weights (save them from rank 0 only).
        **options
            Model-specific training arguments, the fields of the class's ``train_options``
            (:class:`PixNet`: ``max_footprints_per_tile``, ``coverage``, ``feature_cache_size``).

        Returns
        -------
        ``self``, trained; one record per epoch is appended to :attr:`history`.

        """
        try:
            opts = self.train_options(**options)
        except TypeError:
            valid = sorted(f.name for f in dataclasses.fields(self.train_options))
            raise TypeError(
                f"{type(self).__name__}.train() got unexpected argument(s) {sorted(options)}; "
                f"its model-specific training arguments are {valid}."
            ) from None
        seed, batch_size, lam, progress = self._fit_args(seed, batch_size, lam, progress)
        max_epochs = check_int("max_epochs", max_epochs)
        steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch)
        # a resumed model keeps the settings of its previous training unless this call changes them
        lr = check_number("lr", self._carried("lr", lr, 5e-4))
        weight_decay = check_number(
            "weight_decay", self._carried("weight_decay", weight_decay, 1e-4), minimum=0, inclusive=True
        )
        prev_ema = (self.training_params or {}).get("ema")
        ema = check_ema(prev_ema if ema is None else ema)
        lr_schedule = self._carried("lr_schedule", lr_schedule, "constant")
        check_choice("lr_schedule", lr_schedule, LRSchedule)
        augment = self._carried("augment", augment, True)
        if not isinstance(augment, bool):
            raise TypeError(f"`augment` must be True or False, got {augment!r}.")
        if patience is not None:
            patience = check_int("patience", patience)
        dev = settings.resolve_device(device)
        dist = distributed_from_env(distributed, dev)
        if dist is not None:
            if not self.supports_distributed:
                raise NotImplementedError(
                    f"{type(self).__name__} does not train data-parallel yet (PixNet does); under torchrun pass "
                    "distributed=False to train one independent copy per process."
                )
            dev = dist.device
            progress = progress and dist.is_main
        torch.manual_seed(seed)  # the module is built (randomly initialised) from this seed
        sdatas, tables, keys, train_idx, val_idx, names = self._prepare(
            sdata, tables, image_key, validation, n_top_genes
        )
        plan = self._training_plan(
            TrainingRun(
                sdatas,
                tables,
                keys,
                train_idx,
                val_idx,
                tiles,
                batch_size,
                augment,
                lam,
                seed,
                dev,
                progress,
                opts,
                names,
                dist,
            )
        )
        self.training_params = {
            "tables": tables,
            "n_sections": len(sdatas),
            "sections": names,
            "validation": val_idx,
            "max_epochs": max_epochs,
            "steps_per_epoch": steps_per_epoch,
            "batch_size": batch_size,
            "lr": lr,
            "weight_decay": weight_decay,
            "ema": ema,
            "lr_schedule": lr_schedule,
            "lam": lam,
            "patience": patience,
            "augment": augment,
            "tiles": tiles,
            "seed": seed,
            **dataclasses.asdict(opts),
        }
        fit(
            self,
            plan,
            device=dev,
            max_epochs=max_epochs,
            steps_per_epoch=steps_per_epoch,
            lr=lr,
            weight_decay=weight_decay,
            ema=ema,
            lr_schedule=lr_schedule,
            patience=patience,
            progress=progress,
            dist=dist,
            desc=f"training {type(self).__name__} on {', '.join(names[i] for i in train_idx)}",
        )
        self._after_fit(plan)
        return self

    def _after_fit(self, plan: Any) -> None:
        """Hook after :func:`~stpredict.train.fit` (e.g. keep statistics of the plan)."""
