"""What every stpredict model shares: genes and recipe, section bookkeeping, checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._logging import logger
from ._data import Recipe, default_image_key, select_genes

if TYPE_CHECKING:
    from spatialdata import SpatialData

__all__ = ["BaseModel", "load"]

_CONFIG = "config.json"
_WEIGHTS = "weights.pt"
_OPTIMIZER = "optimizer.pt"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def as_list(x) -> list:
    return list(x) if isinstance(x, list | tuple) else [x]


class BaseModel:
    """Genes, recipe, ``train_mpp``, training bookkeeping and checkpoints of an stpredict model.

    Subclasses set ``_FORMAT`` (checkpoint format name), ``key`` (default prefix of the tables they
    write), ``dense`` (whether the model predicts a dense map usable by
    :func:`stpredict.tl.predict_dense`) and implement ``_build`` and ``predict_shapes``.
    """

    _FORMAT = ""
    _FORMAT_VERSION = 1
    key = "model"
    dense = False

    config: dict[str, Any]
    recipe: Recipe | None
    module: torch.nn.Module | None

    def _init_common(self, genes: Sequence[str] | None, target_sum: float) -> None:
        self.recipe = Recipe(list(genes), target_sum=target_sum) if genes is not None else None
        self._target_sum = float(target_sum)
        self.module = None
        self.history: list[dict] = []
        self.training_params: dict[str, Any] = {}
        self.optimizer_state: dict | None = None

    # ------------------------------------------------------------------ basics
    @property
    def genes(self) -> list[str]:
        """Output gene names (empty before training when not given)."""
        return list(self.recipe.genes) if self.recipe else []

    @property
    def train_mpp(self) -> float:
        """Pixel size (µm) of the images the model sees."""
        return float(self.config["train_mpp"])

    def _build(self, *, load_weights: bool = True) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_trained(self) -> None:
        if self.module is None or self.recipe is None:
            raise RuntimeError(
                f"The {type(self).__name__} has no genes yet: train it (or pass genes=) before predicting."
            )

    def _prepare(
        self,
        sdata: SpatialData | Sequence[SpatialData],
        tables: str | Sequence[str],
        image_key: str | Sequence[str] | None,
        validation: int | Sequence[int] | None,
        n_top_genes: int,
    ) -> tuple[list, list[str], list[str], list[int], list[int]]:
        """Check the sections and tables, choose genes on the training sections; build the module."""
        sdatas = as_list(sdata)
        tables = as_list(tables)
        keys = as_list(image_key) if image_key is not None else [default_image_key(s) for s in sdatas]
        if len(keys) == 1 and len(sdatas) > 1:
            keys = keys * len(sdatas)
        if len(keys) != len(sdatas):
            raise ValueError(f"Got {len(keys)} image keys for {len(sdatas)} sections.")
        val_idx = [] if validation is None else [int(v) for v in as_list(validation)]
        if any(v < 0 or v >= len(sdatas) for v in val_idx):
            raise ValueError(f"validation must index the {len(sdatas)} sections, got {val_idx}.")
        train_idx = [i for i in range(len(sdatas)) if i not in val_idx]
        if not train_idx:
            raise ValueError("Every section is held out for validation; keep at least one for training.")
        for i, s in enumerate(sdatas):
            for t in tables:
                if t not in s.tables:
                    raise KeyError(f"Table {t!r} not found in section {i}; its tables: {list(s.tables)}.")
        if self.recipe is None:
            genes = select_genes([sdatas[i].tables[t] for i in train_idx for t in tables], n_top_genes)
            self.recipe = Recipe(genes, target_sum=self._target_sum)
            logger.info(f"Selected {len(genes)} genes by mean expression on the training tables.")
        if self.module is None:
            self._build()
        return sdatas, tables, keys, train_idx, val_idx

    # ------------------------------------------------------------------ checkpoints
    def _arch_for_load(self) -> dict:
        return dict(self.config)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False, save_optimizer: bool = True) -> Path:
        """Save weights, architecture, training parameters, genes, recipe, ``train_mpp`` and version.

        Writes ``config.json``, ``weights.pt`` and (for resuming) ``optimizer.pt`` into the folder ``path``;
        a non-empty folder is only replaced with ``overwrite=True``.

        Returns
        -------
        The checkpoint folder, for :meth:`load`.

        """
        from .. import __version__

        self._check_trained()
        path = Path(path)
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise FileExistsError(
                f"{path} exists and is not empty; pass `overwrite=True` to replace the checkpoint."
            )
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.module.state_dict(), path / _WEIGHTS)
        if save_optimizer and self.optimizer_state is not None:
            torch.save(self.optimizer_state, path / _OPTIMIZER)
        elif (path / _OPTIMIZER).exists():
            (path / _OPTIMIZER).unlink()
        config = {
            "format": self._FORMAT,
            "format_version": self._FORMAT_VERSION,
            "stpredict_version": __version__,
            "architecture": self.config,
            "recipe": self.recipe.to_dict(),
            "training": self.training_params,
            "history": self.history,
            "weights_sha256": _sha256(path / _WEIGHTS),
        }
        (path / _CONFIG).write_text(json.dumps(config, indent=2, default=float))
        return path

    @classmethod
    def _from_config(cls, genes: list[str], arch: dict, target_sum: float) -> BaseModel:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | None = None):
        """Load a checkpoint written by :meth:`save`, checking its format, integrity and architecture."""
        from .. import __version__
        from ._train import resolve_device

        config = read_config(path)
        path = Path(path)
        if cls is BaseModel:
            return _MODEL_FORMATS()[config.get("format")].load(path, device=device)
        if config.get("format") != cls._FORMAT:
            raise ValueError(
                f"{path} is not a {cls.__name__} checkpoint (format {config.get('format')!r}); "
                "load it with `stpredict.model.load`, which picks the right class."
            )
        if config.get("format_version", 0) > cls._FORMAT_VERSION:
            raise ValueError(
                f"{path} was written by stpredict {config.get('stpredict_version')} with a newer checkpoint format; "
                f"upgrade stpredict (this is {__version__})."
            )
        w_path = path / _WEIGHTS
        if _sha256(w_path) != config.get("weights_sha256"):
            raise ValueError(
                f"{w_path} does not match the checksum in {_CONFIG}: the checkpoint is truncated or was modified. "
                "Save it again or restore the file."
            )
        arch = dict(config["architecture"])
        recipe = config["recipe"]
        model = cls._from_config(recipe["genes"], arch, recipe["target_sum"])
        model.config = arch
        model.recipe = Recipe(recipe["genes"], target_sum=recipe["target_sum"], log1p=recipe["log1p"])
        state = torch.load(w_path, map_location="cpu", weights_only=True)
        try:
            model.module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"The weights in {w_path} do not fit the architecture in {_CONFIG}: {exc}"
            ) from exc
        model.history = list(config.get("history", []))
        model.training_params = dict(config.get("training", {}))
        if (path / _OPTIMIZER).is_file():
            model.optimizer_state = torch.load(path / _OPTIMIZER, map_location="cpu", weights_only=False)
        if config.get("stpredict_version") != __version__:
            logger.info(
                f"Checkpoint written by stpredict {config.get('stpredict_version')}; this is {__version__}."
            )
        if device is not None:
            model.module.to(resolve_device(device))
        return model


def read_config(path: str | os.PathLike) -> dict:
    """The ``config.json`` of a checkpoint folder, with clear errors for what is not one."""
    path = Path(path)
    cfg_path, w_path = path / _CONFIG, path / _WEIGHTS
    if not cfg_path.is_file() or not w_path.is_file():
        raise FileNotFoundError(
            f"{path} is not an stpredict checkpoint: expected {_CONFIG} and {_WEIGHTS} in it."
        )
    try:
        return json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cfg_path} is not valid JSON (truncated or corrupted checkpoint): {exc}") from exc


def _MODEL_FORMATS() -> dict[str, type]:
    from ._baselines import LinearProbe, SpotRegressor
    from ._model import PixNet

    return {c._FORMAT: c for c in (PixNet, SpotRegressor, LinearProbe)}


def load(path: str | os.PathLike, *, device: str | None = None):
    """Load any stpredict checkpoint (:class:`PixNet`, :class:`SpotRegressor`, :class:`LinearProbe`).

    The class is read from the checkpoint's ``config.json``.
    """
    config = read_config(path)
    formats = _MODEL_FORMATS()
    fmt = config.get("format")
    if fmt not in formats:
        raise ValueError(f"{path} is not an stpredict checkpoint (format {fmt!r}; known: {sorted(formats)}).")
    return formats[fmt].load(path, device=device)


def footprint_diameters(fp) -> np.ndarray:
    """Diameter of disks, or the larger side of the bounding box of polygons, in the footprints' pixels."""
    if fp.is_disk:
        return 2 * fp.radii
    b = fp.bounds()
    return np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
