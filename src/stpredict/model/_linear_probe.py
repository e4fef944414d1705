"""The foundation-model linear probe: frozen encoder features mean-pooled per footprint + ridge regression."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from spatialdata import SpatialData

from .. import _docs
from .._logging import logger
from .._progress import tqdm
from .._settings import settings
from .._types import Coverage
from ..module import LinearProbeModule, to_torch_sparse
from ..train import (
    SectionData,
    TileSampler,
    fit_ridge,
    footprint_extents,
    mean_pcc,
    pixnet_score,
    section_data,
    tile_holding,
    training_targets,
)
from ._base import Preset, architecture
from ._dense import DenseModel

__all__ = ["LinearProbe"]


def feature_tile(section: SectionData, tile_size: int) -> int:
    """The feature tile for a section: ``tile_size``, or larger where a footprint would fit in no tile.

    Feature tiles overlap by half, so a tile of twice a footprint's extent holds it whole wherever it lies; the
    encoder is frozen and convolutional, so a larger tile changes only memory (the features of a pixel see the same
    receptive field). Large footprints — e.g. the unions of :func:`stpredict.pp.pool_footprints` — are then pooled
    over exactly their pixels.
    """
    largest = max((float(footprint_extents(b).max()) for b in section.bounds if len(b)), default=0.0)
    need = tile_holding(largest + 1, scale=2)
    if need > tile_size:
        logger.info(
            f"LinearProbe features of section {section.name!r}: {need} px tiles (not {tile_size}) so that each of "
            f"its footprints (the largest {largest:.0f} px) lies whole in one."
        )
    return max(int(tile_size), need)


class LinearProbe(DenseModel):
    """Foundation-model linear probe: frozen encoder features mean-pooled in each footprint + ridge regression.

    Features are the encoder's pyramid levels upsampled to the pixel grid at ``train_mpp`` and
    averaged over each footprint; a ridge regression (scikit-learn; standardised features, ``alpha``
    chosen by cross-validation across training sections) maps them to genes. Features whose SD over
    the training footprints is below 10% of the median feature SD are scaled by that floor instead, so
    near-constant (dead) features cannot get large weights. Since both steps are linear the probe is
    also a dense model: :meth:`predict` and :func:`stpredict.tl.predict_dense` give the map whose
    footprint means are the probe's predictions.

    Parameters
    ----------
    genes
        Output genes (default: top ``n_top_genes`` by mean on the training tables).
    encoder, pretrained, encoder_weights, encoder_kwargs
        As :class:`PixNet`.
    levels
        Encoder levels used as features (default: all).
    train_mpp
        Pixel size (µm) the encoder sees.
    tile_size
        Tile side (pixels at ``train_mpp``) used to extract footprint features.
    alpha
        Ridge penalty on standardised features; default chosen from ``alphas`` by cross-validation
        (leave one training section out; 5 random folds with a single section).
    alphas
        Candidate penalties.
    target_sum
        Normalisation target (counts / total × ``target_sum``, then log1p).

    """

    key: ClassVar[str] = "linear_probe"
    _FORMAT: ClassVar[str] = "stpredict-linear-probe"
    module_class = LinearProbeModule
    module_args = ("encoder", "levels")
    default_batch_size = 4
    presets: ClassVar[dict[str, Preset]] = {
        "paper": Preset({"pretrained": True, "train_mpp": 1.0, "tile_size": 384}),
        "cpu": Preset({"train_mpp": 2.0, "tile_size": 192}),
    }

    def __init__(
        self,
        genes: Sequence[str] | None = None,
        *,
        encoder: str = "resnet18",
        pretrained: bool | Literal["auto"] = "auto",
        encoder_weights: str | os.PathLike | None = None,
        encoder_kwargs: Mapping[str, Any] | None = None,
        levels: Sequence[int] | None = None,
        train_mpp: float = 1.0,
        tile_size: int = 384,
        alpha: float | None = None,
        alphas: Sequence[float] = tuple(10.0 ** np.arange(-2, 6.5, 0.5)),
        target_sum: float = 1e4,
    ) -> None:
        if alpha is not None and alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}.")
        levels = None if levels is None else [int(i) for i in levels]
        alpha = None if alpha is None else float(alpha)
        alphas = [float(a) for a in alphas]
        super().__init__(genes, target_sum=target_sum, **architecture(locals()))

    def __repr__(self) -> str:
        state = (
            f"alpha={self.training_params['alpha']:.3g}" if "alpha" in self.training_params else "untrained"
        )
        return f"LinearProbe(encoder={self.config['encoder']!r}, genes={len(self.genes)}, train_mpp={self.train_mpp}, {state})"

    @torch.no_grad()
    def _features(
        self,
        section: SectionData,
        *,
        batch_size: int,
        coverage: Coverage,
        device: torch.device,
        progress: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        batches = TileSampler(
            [section],
            tile_size=feature_tile(section, self.config["tile_size"]),
            augment=False,
            coverage=coverage,
        ).fixed_batches(batch_size)
        if not batches:  # no footprint fits in a tile
            return np.zeros((0, 0)), np.zeros((0, len(self.genes)))
        net = self.module.to(device).eval()
        X, Y = [], []
        for b in tqdm(batches, desc=f"features {section.name}", progress=progress, leave=False):
            X.append(
                net.pooled(b.images.to(device), to_torch_sparse(b.A, device=device)).float().cpu().numpy()
            )
            Y.append(b.targets)
        return np.vstack(X).astype(np.float64), np.vstack(Y).astype(np.float64)

    @_docs.doc_params(
        sdata=_docs.sdatas,
        tables=_docs.tables,
        image_key=_docs.image_keys,
        n_top_genes=_docs.n_top_genes,
        coverage=_docs.coverage,
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
        lam: float | None = None,
        batch_size: int | None = None,
        coverage: Coverage = "center",
        tiles: str | None = None,
        seed: int | None = None,
        device: str | None = None,
        progress: bool | None = None,
    ) -> LinearProbe:
        """Extract footprint features once and fit the ridge regression (no epochs: one closed-form fit).

        Parameters
        ----------
        {sdata}
        {tables}
        {image_key}
        validation
            Section(s) left out of the fit; their loss, MSE and PCC are recorded in :attr:`history`.
        {n_top_genes}
        lam
            Weight of the PCC term in the cross-validation score (MSE + λ·(1 − PCC), PixNet's loss);
            default 0.5, or the value of the model's previous fit.
        batch_size
            Tiles per encoder forward pass.
        {coverage}
        {tiles}
        {seed}
        {device}
        {progress}

        Returns
        -------
        ``self``, fitted; the fit is recorded in :attr:`history` and :attr:`training_params`.

        """
        seed, batch_size, lam, progress = self._fit_args(seed, batch_size, lam, progress)
        torch.manual_seed(seed)  # the (random-init) encoder is built from this seed, as PixNet's
        sdatas, tables, keys, train_idx, val_idx, names = self._prepare(
            sdata, tables, image_key, validation, n_top_genes
        )
        parts = training_targets(
            sdatas,
            image_keys=keys,
            tables=tables,
            recipe=self.recipe,
            names=names,
            train_idx=train_idx,
            val_idx=val_idx,
            tiles=tiles,
        )
        dev = settings.resolve_device(device)
        t0 = time.perf_counter()
        data = {}
        T = self.config["tile_size"]
        try:
            for i in range(len(sdatas)):
                if not any(len(p) for p in parts[i]):  # a training section without footprints (warned)
                    continue
                sec = section_data(
                    sdatas[i], parts[i], image_key=keys[i], train_mpp=self.train_mpp, name=names[i]
                )
                X, Y = self._features(
                    sec, batch_size=batch_size, coverage=coverage, device=dev, progress=progress
                )
                if len(X) < sec.n_footprints:  # too large for a tile, or covering no pixel centre
                    msg = (
                        f"{sec.n_footprints - len(X)} of the {sec.n_footprints} footprints of section {names[i]!r} lie "
                        f"wholly in none of the {T} px feature tiles at {self.train_mpp:g} µm/px ({T * self.train_mpp:g} "
                        "µm, overlapping by half) or cover no pixel centre"
                    )
                    if not len(X) and i in val_idx:
                        raise ValueError(
                            f"{msg}: the validation section has nothing to score. Raise `tile_size`."
                        )
                    logger.warning(f"{msg}; they are left out (raise `tile_size` to use them).")
                if len(X):
                    data[i] = (X, Y)
        finally:
            self.module.cpu()
        fit_idx = [i for i in train_idx if i in data]
        if not fit_idx:
            raise ValueError(
                f"None of the training footprints fits in a {T} px tile at {self.train_mpp:g} µm/px "
                f"({T * self.train_mpp:g} µm): there is nothing to fit. Raise `tile_size` so that a tile holds a footprint."
            )
        X = np.vstack([data[i][0] for i in fit_idx])
        Y = np.vstack([data[i][1] for i in fit_idx])
        groups = np.concatenate([np.full(len(data[i][0]), i) for i in fit_idx])
        if len(fit_idx) < 2:  # one training section: 5 random folds
            groups = np.random.default_rng(seed).integers(5, size=len(X))
        ridge = fit_ridge(
            X, Y, groups=groups, alphas=self.config["alphas"], alpha=self.config["alpha"], lam=lam
        )
        if ridge.cv_scores is not None and ridge.alpha in (
            min(self.config["alphas"]),
            max(self.config["alphas"]),
        ):
            logger.warning(
                f"Ridge alpha {ridge.alpha:g} is at the edge of `alphas`; consider widening the grid."
            )
        with torch.no_grad():
            self.module.weight.copy_(torch.from_numpy(ridge.weight.astype(np.float32)))
            self.module.bias.copy_(torch.from_numpy(ridge.bias.astype(np.float32)))
        P = ridge.predict(X)
        rec = {
            "epoch": len(self.history) + 1,
            "train_loss": pixnet_score(Y, P, lam),
            "train_pcc": mean_pcc(Y, P),
            "alpha": ridge.alpha,
            "seconds": time.perf_counter() - t0,
        }
        if val_idx:
            Xv = np.vstack([data[i][0] for i in val_idx])
            Yv = np.vstack([data[i][1] for i in val_idx])
            Pv = ridge.predict(Xv)
            rec.update(
                {
                    "val_loss": pixnet_score(Yv, Pv, lam),
                    "val_mse": float(np.mean((Pv - Yv) ** 2)),
                    "val_pcc": mean_pcc(Yv, Pv),
                }
            )
        self.history.append(rec)
        self.training_params = {
            "tables": tables,
            "n_sections": len(sdatas),
            "validation": val_idx,
            "n_footprints": len(X),
            "n_features": int(X.shape[1]),
            "alpha": ridge.alpha,
            "cv_scores": ridge.cv_scores,
            "lam": lam,
            "batch_size": batch_size,
            "coverage": coverage,
            "tiles": tiles,
            "seed": seed,
        }
        logger.info(
            f"LinearProbe: ridge on {X.shape[1]} features of {len(X)} footprints, alpha {ridge.alpha:g} "
            f"({'cross-validated' if ridge.cv_scores else 'given'})."
        )
        return self
