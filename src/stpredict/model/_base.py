"""What every stpredict model shares: genes and recipe, presets, checkpoints, the registry and the one ``train``.

A model class declares, in one place each (scvi-tools' split, kept small):

- its constructor arguments = its *architecture* (stored in the checkpoint and used to rebuild it:
  ``__init__`` passes ``locals()`` to :meth:`BaseModel.__init__`, no per-class ``_from_config``);
- ``module_class`` and ``module_args`` (which constructor arguments the ``nn.Module`` takes);
- ``presets``: :class:`Preset` objects (architecture and training arguments) by name;
- ``key`` (registry name and default ``key_added``), ``dense`` (whether :func:`stpredict.tl.predict_dense`
  can run it) and ``default_batch_size``;
- for trained networks (:class:`~stpredict.model.TrainedModel`), ``train_options`` and
  ``_training_plan``.
"""

from __future__ import annotations

import inspect
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from spatialdata import SpatialData

from .._core import Recipe, check_he, drop_none, file_sha256, section_names, select_genes
from .._core._validate import check_int, check_names, check_number, check_table_counts
from .._logging import logger
from .._settings import settings
from .._types import ModelName, PresetName
from .._version import __version__
from ..module._encoder import encoder_kwargs_config, pretrained_available, random_init_message
from ._checkpoint import _is_checkpoint, _torch_load, encoder_weights_info, read_config

__all__ = ["BaseModel", "Preset", "architecture", "load", "model_class", "read_config"]

_CONFIG = "config.json"  # the checkpoint files (also in _checkpoint.py)
_WEIGHTS = "weights.pt"
_OPTIMIZER = "optimizer.pt"

_BY_NAME: dict[str, type[BaseModel]] = {}
_BY_FORMAT: dict[str, type[BaseModel]] = {}


#: Training footprints at least this wide (µm) are spots (legacy ST 100 µm, Visium 55 µm): ``"auto"`` then trains with
#: a model's ``"cpu_spots"`` preset on a CPU, and with ``"cpu"`` for bins (Visium HD 2/8/16 µm) and cells.
SPOT_UM = 50.0


@dataclass(frozen=True)
class Preset:
    """A named recipe of one model class: constructor (architecture) and ``train`` arguments."""

    architecture: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)

    def as_kwargs(self) -> dict[str, Any]:
        """Architecture and training arguments in one dict (what ``tl.train(**kwargs)`` would take)."""
        return {**self.architecture, **self.training}


def _as_list(x) -> list:
    return list(x) if isinstance(x, list | tuple) else [x]


def _jsonable(v: Any) -> Any:
    """Constructor arguments as they are stored in ``config.json``."""
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, list | tuple | np.ndarray):
        return [_jsonable(x) for x in v]
    return v


def architecture(init_locals: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture arguments among a constructor's ``locals()`` (all but ``self``, ``genes``, ``target_sum``)."""
    return {k: v for k, v in init_locals.items() if k not in ("self", "genes", "target_sum", "__class__")}


#: Entry point group through which a package registers model classes: ``mymodel = "mypkg.models:MyModel"``.
ENTRY_POINT_GROUP = "stpredict.models"


def model_class(name: ModelName | str) -> type[BaseModel]:
    """The registered model class called ``name`` (``"pixnet"``, ``"spot_regressor"``, ``"linear_probe"``, ...).

    A class registers itself by subclassing :class:`BaseModel` with a ``key``; a class another package provides is
    found through its ``stpredict.models`` entry point of that name, imported on first use.
    """
    if name not in _BY_NAME and isinstance(name, str):
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, BaseModel) and cls.key == name):
                raise TypeError(
                    f"The entry point {ep.value!r} of {name!r} ({ENTRY_POINT_GROUP}) is not an stpredict model class "
                    f"with key {name!r}."
                )
    if name not in _BY_NAME:
        raise ValueError(
            f"model must be one of {', '.join(map(repr, sorted(_BY_NAME)))} or a model instance; got {name!r}. A "
            f"model of another package registers under the entry point group {ENTRY_POINT_GROUP!r}."
        )
    return _BY_NAME[name]


class BaseModel:
    """Genes, recipe, architecture, training bookkeeping, presets and checkpoints of an stpredict model."""

    key: ClassVar[str] = ""
    dense: ClassVar[bool] = False
    module_class: ClassVar[type[torch.nn.Module]]
    module_args: ClassVar[tuple[str, ...]] = ()
    #: Architecture arguments a checkpoint that predates them was built with (filled in when it is loaded).
    legacy_architecture: ClassVar[Mapping[str, Any]] = {}
    presets: ClassVar[Mapping[str, Preset]] = {}
    default_batch_size: ClassVar[int] = 4
    _FORMAT: ClassVar[str] = ""
    _FORMAT_VERSION: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("key"):
            _BY_NAME[cls.key] = cls
            _BY_FORMAT[cls._FORMAT] = cls

    def __init__(
        self, genes: Sequence[str] | None = None, *, target_sum: float = 1e4, **architecture: Any
    ) -> None:
        train_mpp = architecture.get("train_mpp")
        if train_mpp is not None and not train_mpp > 0:
            raise ValueError(f"train_mpp must be positive (µm per pixel), got {train_mpp}.")
        if "pretrained" in architecture and architecture["pretrained"] not in (True, False, "auto"):
            raise ValueError(f"pretrained must be True, False or 'auto', got {architecture['pretrained']!r}.")
        if "encoder_kwargs" in architecture:
            architecture["encoder_kwargs"] = encoder_kwargs_config(architecture["encoder_kwargs"])
        self.config: dict[str, Any] = {k: _jsonable(v) for k, v in architecture.items()}
        self.recipe: Recipe | None = Recipe(list(genes), target_sum=target_sum) if genes is not None else None
        self._target_sum = float(target_sum)
        self.module: torch.nn.Module | None = None
        self.history: list[dict] = []
        self.training_params: dict[str, Any] = {}
        self.optimizer_state: dict | None = None
        #: Where the encoder's initial weights came from: path, checksum and, for weights from
        #: :func:`stpredict.tl.pretrain_encoder`, how they were pretrained; or, for ``pretrained=True``,
        #: the hub repository or folder they came from (saved in checkpoints). ``None``: random initialisation.
        self.encoder_weights_info: dict[str, Any] | None = None
        #: The checkpoint folder this model was last saved to or loaded from (``None``: never saved).
        self.checkpoint: str | None = None
        self._weights_sha256: str | None = None
        self._checkpoint_state: float | None = None  # fingerprint of the weights as saved/loaded
        if self.recipe is not None:
            self._build()

    # ------------------------------------------------------------------ declarations
    @classmethod
    def architecture_args(cls) -> frozenset[str]:
        """Names of the constructor's architecture arguments."""
        return frozenset(inspect.signature(cls.__init__).parameters) - {"self", "genes"}

    @classmethod
    def training_args(cls) -> frozenset[str]:
        """Names :meth:`train` accepts besides the data (``sdata``, ``tables``, …)."""
        return frozenset(inspect.signature(cls.train).parameters) - {"self", "sdata", "options"}

    @classmethod
    def split_kwargs(cls, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split keyword arguments into constructor and :meth:`train` arguments; unknown names are an error."""
        arch_names, fit_names = cls.architecture_args(), cls.training_args()
        unknown = sorted(set(kwargs) - arch_names - fit_names)
        if unknown:
            no_loop = sorted(
                set(unknown)
                & {"max_epochs", "steps_per_epoch", "lr", "weight_decay", "ema", "lr_schedule", "patience"}
            )
            why = (
                f" It is fitted in one closed-form ridge solve (no epochs, steps or learning rate): pass {no_loop} "
                "only to the models trained by gradient steps."
                if no_loop and "max_epochs" not in fit_names
                else ""
            )
            raise TypeError(
                f"{cls.__name__} does not take {unknown}.{why} Its architecture arguments are {sorted(arch_names)}, "
                f"and its training arguments {sorted(fit_names - {'tables', 'image_key', 'validation', 'n_top_genes'})}."
            )
        arch = {k: v for k, v in kwargs.items() if k in arch_names}
        return arch, {k: v for k, v in kwargs.items() if k not in arch_names}

    @classmethod
    def auto_preset(cls, footprint_um: float | None = None) -> str:
        """The preset ``"auto"`` stands for, given the training footprints' size ``footprint_um`` (µm).

        ``"paper"`` with CUDA; on other devices ``"cpu_spots"`` (where the class has one) for footprints of spot size
        (≥ :data:`SPOT_UM`), else ``"cpu"``.
        """
        if settings.resolve_device("auto").type == "cuda":
            return "paper"
        if footprint_um is not None and footprint_um >= SPOT_UM and "cpu_spots" in cls.presets:
            return "cpu_spots"
        return "cpu"

    @classmethod
    def from_preset(
        cls,
        preset: PresetName | str = "auto",
        genes: Sequence[str] | None = None,
        *,
        footprint_um: float | None = None,
        **kwargs: Any,
    ) -> tuple[BaseModel, dict[str, Any]]:
        """A new model built from a preset with ``kwargs`` on top, and the training arguments to use.

        ``"auto"`` is :meth:`auto_preset` of ``footprint_um`` (the size of the training footprints, µm, which
        :func:`stpredict.tl.train` reads from the tables). A preset that sets ``pretrained=True`` (the ``"paper"``
        ones) does not when ``encoder_weights`` is given.
        """
        if preset == "auto":
            preset = cls.auto_preset(footprint_um)
        if preset not in cls.presets:
            raise ValueError(f"preset must be 'auto' or one of {sorted(cls.presets)}; got {preset!r}.")
        preset_kwargs = cls.presets[preset].as_kwargs()
        if kwargs.get("encoder_weights") is not None and "pretrained" not in kwargs:
            preset_kwargs.pop("pretrained", None)  # a local weights file takes the place of the hub's weights
        arch, fit_kwargs = cls.split_kwargs({**preset_kwargs, **kwargs})
        model = cls(genes, **arch)
        logger.info(f"{cls.__name__} preset {preset!r}: {arch}.")
        return model, fit_kwargs

    # ------------------------------------------------------------------ basics
    @property
    def genes(self) -> list[str]:
        """Output gene names (empty before training when not given)."""
        return list(self.recipe.genes) if self.recipe else []

    @property
    def train_mpp(self) -> float:
        """Pixel size (µm) of the images the model sees."""
        return float(self.config["train_mpp"])

    def _module_kwargs(self, load_weights: bool) -> dict[str, Any]:
        kw = {k: self.config[k] for k in self.module_args}
        kw["pretrained"] = bool(self.config.get("pretrained")) and load_weights
        kw["encoder_weights"] = self.config.get("encoder_weights") if load_weights else None
        kw["encoder_kwargs"] = self.config.get("encoder_kwargs")
        return kw

    def _resolve_pretrained(self) -> None:
        """Turn ``pretrained="auto"`` into what happens: the hub's weights where they can be had, else random + warning."""
        if self.config.get("pretrained") != "auto":
            return
        if self.config.get("encoder_weights"):
            self.config["pretrained"] = False  # a local weights file takes their place
            return
        name = str(self.config["encoder"])
        ok, reason = pretrained_available(name)
        self.config["pretrained"] = ok
        if not ok:
            warnings.warn(random_init_message(name, reason), UserWarning, stacklevel=4)

    def _build(self, *, load_weights: bool = True) -> None:
        """Build :attr:`module` from the architecture (loading pretrained encoder weights unless told not to)."""
        if load_weights:
            self._resolve_pretrained()
        self.module = self.module_class(len(self.genes), **self._module_kwargs(load_weights))
        if not load_weights:
            return
        w = self.config.get("encoder_weights")
        if w:
            self.encoder_weights_info = encoder_weights_info(w)
        elif self.config.get("pretrained"):
            source = getattr(getattr(self.module, "encoder", None), "weights_source", None)
            self.encoder_weights_info = dict(source) if source else None

    def provenance(self) -> dict[str, Any]:
        """Which model this is, as JSON values without ``None`` (recorded in prediction tables' ``uns``).

        Class and registry key, the encoder and how it was initialised, the architecture (constructor
        arguments that are set), the epochs trained, and the checkpoint folder with its weights' checksum
        when the model was saved or loaded (``trained_on_from_checkpoint`` instead once its weights changed).
        """
        info = self.encoder_weights_info or {}
        source = info.get("source", "file" if "path" in info else None)
        if source == "file":
            init = f"weights file {info.get('path')} (sha256 {str(info.get('sha256', ''))[:12]})"
        elif source == "hf-hub":
            init = f"pretrained weights {info.get('hf_hub_id')} ({info.get('url')})"
        elif source == "local-dir":
            init = f"pretrained weights from the folder {info.get('path')}"
        elif source == "url":
            init = f"pretrained weights from {info.get('url')}"
        else:
            init = "random initialisation"
        rec: dict[str, Any] = {
            "class": type(self).__name__,
            "key": self.key,
            "encoder": str(self.config.get("encoder")),
            "encoder_init": init,
            "encoder_weights": {k: v for k, v in info.items() if isinstance(v, str | int | float)},
            "architecture": self.config,
            "trained_epochs": len(self.history),
        }
        if self.checkpoint and self._checkpoint_state == self._state_fingerprint():
            rec["checkpoint"] = self.checkpoint
            rec["weights_sha256"] = self._weights_sha256
        elif self.checkpoint:  # trained on after it was saved or loaded: the checkpoint is where it started
            rec["trained_on_from_checkpoint"] = self.checkpoint
        return drop_none(rec)

    def _state_fingerprint(self) -> float | None:
        """A cheap fingerprint of the weights (to tell whether they changed since the checkpoint)."""
        if self.module is None:
            return None
        with torch.no_grad():
            vals = [v.detach().double() for v in self.module.state_dict().values() if v.is_floating_point()]
            return float(sum(v.sum() + v.square().sum() for v in vals))

    def _remember_checkpoint(self, path: Path, sha256: str) -> None:
        self.checkpoint, self._weights_sha256 = os.fspath(path.resolve()), sha256
        self._checkpoint_state = self._state_fingerprint()

    def _check_trained(self) -> None:
        if self.module is None or self.recipe is None:
            raise RuntimeError(
                f"The {type(self).__name__} has no genes yet: train it (or pass genes=) before predicting."
            )

    def __repr__(self) -> str:
        state = f"{len(self.history)} epochs trained" if self.history else "untrained"
        return (
            f"{type(self).__name__}(encoder={self.config.get('encoder')!r}, genes={len(self.genes)}, "
            f"train_mpp={self.config.get('train_mpp')}, {state})"
        )

    def _carried(self, name: str, value: Any, default: Any) -> Any:
        """``value``, or when it is ``None`` the one this model's previous training used, else ``default``.

        A resumed model (a second ``train`` call, or a loaded checkpoint) keeps its training settings
        unless the call changes them.
        """
        if value is not None:
            return value
        previous = (self.training_params or {}).get(name)
        return default if previous is None else previous

    def _fit_args(
        self, seed: int | None, batch_size: int | None, lam: float | None, progress: bool | None
    ) -> tuple[int, int, float, bool]:
        """The checked arguments every ``train`` shares, with the defaults filled in: seed, batch size, λ, progress."""
        seed = settings.seed if seed is None else check_int("seed", seed, minimum=0)
        # a resumed model keeps the batch size and λ it was trained with
        batch_size = check_int("batch_size", self._carried("batch_size", batch_size, self.default_batch_size))
        lam = check_number("lam", self._carried("lam", lam, 0.5), minimum=0, inclusive=True)
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(f"`progress` must be True, False or None, got {progress!r}.")
        return seed, batch_size, lam, settings.progress_bar if progress is None else progress

    def _prepare(
        self,
        sdata: SpatialData | Sequence[SpatialData],
        tables: str | Sequence[str],
        image_key: str | Sequence[str] | None,
        validation: int | Sequence[int] | None,
        n_top_genes: int,
    ) -> tuple[list[SpatialData], list[str], list[str], list[int], list[int], list[str]]:
        """Check the sections and tables, choose genes on the training sections; build the module.

        Returns the sections, tables, image keys, training and validation indices, and the sections' names
        (:func:`stpredict._core.section_names`, for progress bars and records).
        """
        sdatas = _as_list(sdata)
        for i, s in enumerate(sdatas):
            if not isinstance(s, SpatialData):
                hint = (
                    " (read it first: `spatialdata.read_zarr(path)`)"
                    if isinstance(s, str | os.PathLike)
                    else ""
                )
                raise TypeError(f"Section {i} must be a SpatialData object, got {type(s).__name__}{hint}.")
        tables = check_names("tables", tables)
        n_top_genes = check_int("n_top_genes", n_top_genes)
        keys = _as_list(image_key) if image_key is not None else [None] * len(sdatas)
        if len(keys) == 1 and len(sdatas) > 1:
            keys = keys * len(sdatas)
        if len(keys) != len(sdatas):
            raise ValueError(f"Got {len(keys)} image keys for {len(sdatas)} sections.")
        val_idx = [] if validation is None else [int(v) for v in _as_list(validation)]
        if any(v < 0 or v >= len(sdatas) for v in val_idx):
            raise ValueError(f"validation must index the {len(sdatas)} sections, got {val_idx}.")
        train_idx = [i for i in range(len(sdatas)) if i not in val_idx]
        if not train_idx:
            raise ValueError("Every section is held out for validation; keep at least one for training.")
        for i, (s, k) in enumerate(zip(sdatas, keys, strict=True)):
            keys[i] = check_he(s, k)[0]  # the default H&E when not given
            for t in tables:
                if t not in s.tables:
                    raise KeyError(f"Table {t!r} not found in section {i}; its tables: {list(s.tables)}.")
        names = section_names(sdatas, keys)
        for i, s in enumerate(sdatas):
            role = " (validation)" if i in val_idx else ""
            for t in tables:  # a table of zeros is refused here, before genes are chosen from it
                check_table_counts(s.tables[t], f"Table {t!r} of section {names[i]!r}{role}")
        if self.recipe is None:
            genes = select_genes([sdatas[i].tables[t] for i in train_idx for t in tables], n_top_genes)
            self.recipe = Recipe(genes, target_sum=self._target_sum)
            logger.info(f"Selected {len(genes)} genes by mean expression on the training tables.")
        if self.module is None:
            self._build()
        return sdatas, tables, keys, train_idx, val_idx, names

    def train(
        self, sdata: SpatialData | Sequence[SpatialData], **kwargs: Any
    ) -> BaseModel:  # pragma: no cover
        raise NotImplementedError

    def predict_footprints(
        self, sdata: SpatialData, *, table: str, **kwargs: Any
    ) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def predict_shapes(
        self, sdata: SpatialData, shapes: str, **kwargs: Any
    ) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | os.PathLike, *, overwrite: bool = False, save_optimizer: bool = True) -> Path:
        """Save weights, architecture, training parameters, genes, recipe, ``train_mpp`` and version.

        Writes ``config.json``, ``weights.pt`` and (for resuming) ``optimizer.pt`` into the folder ``path``;
        a non-empty folder is only replaced with ``overwrite=True``.

        Parameters
        ----------
        path
            The checkpoint folder.
        overwrite
            Replace a non-empty folder.
        save_optimizer
            Also save the optimiser state, so that :meth:`train` on the loaded model resumes it.

        Returns
        -------
        The checkpoint folder, for :meth:`load`.

        """
        self._check_trained()
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            if not overwrite:
                raise FileExistsError(
                    f"{path} exists and is not empty; pass `overwrite=True` to replace the checkpoint."
                )
            # never write into (or over the files of) a folder of the user's
            if not _is_checkpoint(path):
                raise FileExistsError(
                    f"{path} is a folder that holds no stpredict checkpoint (a {_CONFIG} that stpredict wrote), so "
                    "even `overwrite=True` does not write into it: it may hold your files. Choose another path."
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
            "weights_sha256": file_sha256(path / _WEIGHTS),
        }
        if self.encoder_weights_info is not None:
            config["encoder_weights"] = self.encoder_weights_info
        (path / _CONFIG).write_text(json.dumps(config, indent=2, default=float))
        self._remember_checkpoint(path, config["weights_sha256"])
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | None = None) -> BaseModel:
        """Load a checkpoint written by :meth:`save`, checking its format, integrity and architecture.

        The model is rebuilt from the stored constructor arguments (without loading pretrained encoder
        weights: the checkpoint has them) and its weights are loaded.

        Parameters
        ----------
        path
            A folder written by :meth:`save`.
        device
            Move the network there (default: keep it on the CPU; prediction moves it as needed).

        """
        path = Path(path)
        config = read_config(path)
        fmt = config.get("format")
        if cls is BaseModel:
            if fmt not in _BY_FORMAT:
                raise ValueError(
                    f"{path} is not an stpredict checkpoint (format {fmt!r}; known: {sorted(_BY_FORMAT)})."
                )
            return _BY_FORMAT[fmt].load(path, device=device)
        if fmt != cls._FORMAT:
            raise ValueError(
                f"{path} is not a {cls.__name__} checkpoint (format {fmt!r}); "
                "load it with `stpredict.model.load`, which picks the right class."
            )
        if config.get("format_version", 0) > cls._FORMAT_VERSION:
            raise ValueError(
                f"{path} was written by stpredict {config.get('stpredict_version')} with a newer checkpoint format; "
                f"upgrade stpredict (this is {__version__})."
            )
        w_path = path / _WEIGHTS
        if file_sha256(w_path) != config.get("weights_sha256"):
            raise ValueError(
                f"{w_path} does not match the checksum in {_CONFIG}: the checkpoint is truncated or was modified. "
                "Save it again or restore the file."
            )
        missing = [k for k in ("architecture", "recipe", "weights_sha256") if k not in config]
        if missing:
            raise ValueError(
                f"{path / _CONFIG} lacks the key(s) {missing}: it is not a complete stpredict checkpoint. Save the "
                "model again with `model.save(path)`."
            )
        arch = {**cls.legacy_architecture, **config["architecture"]}
        try:
            recipe = Recipe.from_dict(config["recipe"])
            model = cls(None, target_sum=recipe.target_sum, **arch)
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"{path / _CONFIG} does not describe a {cls.__name__} this stpredict can build ({exc}); it was written "
                f"by stpredict {config.get('stpredict_version')!r}. Save it again, or load it with the version that wrote it."
            ) from exc
        model.recipe = recipe
        model._build(load_weights=False)
        state = _torch_load(w_path, weights_only=True, fix="Save the model again, or restore the file.")
        try:
            model.module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"The weights in {w_path} do not fit the architecture in {_CONFIG}: {exc}"
            ) from exc
        model.history = list(config.get("history", []))
        model.training_params = dict(config.get("training", {}))
        model.encoder_weights_info = config.get("encoder_weights")
        model._remember_checkpoint(path, config["weights_sha256"])
        if (path / _OPTIMIZER).is_file():
            model.optimizer_state = _torch_load(
                path / _OPTIMIZER,
                weights_only=False,
                fix=(
                    "It only lets training resume its optimiser: delete it to load the model without it (training "
                    "then starts the optimiser afresh from the saved weights), or save the model again with "
                    "`model.save(path, overwrite=True)`."
                ),
            )
        if config.get("stpredict_version") != __version__:
            logger.info(
                f"Checkpoint written by stpredict {config.get('stpredict_version')}; this is {__version__}."
            )
        if device is not None:
            model.module.to(settings.resolve_device(device))
        return model


def load(path: str | os.PathLike, *, device: str | None = None) -> BaseModel:
    """Load any stpredict checkpoint (:class:`PixNet`, :class:`SpotRegressor`, :class:`LinearProbe`).

    The class is read from the checkpoint's ``config.json``.
    """
    return BaseModel.load(path, device=device)
