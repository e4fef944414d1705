"""Package-wide settings (one object, :data:`stpredict.settings`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ._logging import set_verbosity

if TYPE_CHECKING:
    import torch

__all__ = ["settings"]

_DEVICES = ("auto", "cpu", "cuda", "mps")


def _check_device(value: object) -> str:
    """``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (N a whole number) or ``"mps"``."""
    ok = isinstance(value, str) and (value in _DEVICES or (value.startswith("cuda:") and value[5:].isdigit()))
    if not ok:
        raise ValueError(
            f"device must be one of {_DEVICES} or 'cuda:N' (N = GPU number, e.g. 'cuda:1'); got {value!r}."
        )
    return value


class StpredictSettings:
    """Global settings of stpredict.

    Attributes are validated on assignment. Change them like scanpy's settings::

        import stpredict as stp

        stp.settings.verbosity = 3  # debug logging
        stp.settings.device = "cpu"
        stp.settings.progress_bar = False

    Attributes
    ----------
    verbosity
        0 = errors, 1 = warnings, 2 = info (default), 3 = debug.
    device
        ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"``.
    progress_bar
        Whether long-running functions show tqdm progress bars.
    datasetdir
        Folder where local datasets (e.g. HER2ST sections) are looked up. Defaults to the
        ``STPREDICT_DATA_DIR`` environment variable or ``./data``.
    seed
        Default random seed for synthetic data, tile sampling and training.
    n_jobs
        Number of CPU threads torch uses for training and prediction (``None`` leaves torch's default).
        Applied to torch as soon as it is set, and when stpredict first imports torch.

    """

    def __init__(self) -> None:
        self._verbosity = 2
        set_verbosity(self._verbosity)
        self._device = "auto"
        self._progress_bar = True
        self._datasetdir = Path(os.environ.get("STPREDICT_DATA_DIR", "data"))
        self._seed = 0
        self._n_jobs: int | None = None

    @property
    def verbosity(self) -> int:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 3:
            raise ValueError(f"verbosity must be an int in 0..3, got {value!r}.")
        self._verbosity = value
        set_verbosity(value)

    @property
    def device(self) -> str:
        return self._device

    @device.setter
    def device(self, value: str) -> None:
        self._device = _check_device(value)

    @property
    def progress_bar(self) -> bool:
        return self._progress_bar

    @progress_bar.setter
    def progress_bar(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"progress_bar must be True or False, got {value!r}.")
        self._progress_bar = bool(value)

    @property
    def datasetdir(self) -> Path:
        return self._datasetdir

    @datasetdir.setter
    def datasetdir(self, value: str | os.PathLike) -> None:
        if not isinstance(value, str | os.PathLike):
            raise TypeError(f"datasetdir must be a path, got {value!r}.")
        self._datasetdir = Path(value)

    @property
    def seed(self) -> int:
        return self._seed

    @seed.setter
    def seed(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"seed must be an int, got {value!r}.")
        self._seed = value

    @property
    def n_jobs(self) -> int | None:
        return self._n_jobs

    @n_jobs.setter
    def n_jobs(self, value: int | None) -> None:
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"n_jobs must be a positive int or None, got {value!r}.")
        self._n_jobs = value
        self._apply_n_jobs()

    def _apply_n_jobs(self) -> None:
        """Give torch :attr:`n_jobs` threads, if torch is loaded (stpredict's torch layers call this on import)."""
        if self._n_jobs is not None and "torch" in sys.modules:
            torch = sys.modules["torch"]
            if torch.get_num_threads() != self._n_jobs:
                torch.set_num_threads(self._n_jobs)

    def resolve_device(self, device: str | None = None) -> torch.device:
        """The torch device for ``device`` (default :attr:`device`).

        ``"auto"`` means CUDA when available, then Apple MPS, then the CPU. Imports torch.
        """
        import torch

        device = self._device if device is None else _check_device(device)
        if device == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
                return torch.device("mps")
            return torch.device("cpu")
        return torch.device(device)

    def __setattr__(self, name: str, value: object) -> None:
        if not name.startswith("_") and not isinstance(getattr(type(self), name, None), property):
            fields = [k for k, v in vars(type(self)).items() if isinstance(v, property)]
            raise AttributeError(f"stpredict.settings has no setting {name!r}; the settings are {fields}.")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        fields = ("verbosity", "device", "progress_bar", "datasetdir", "seed", "n_jobs")
        body = ", ".join(f"{f}={getattr(self, f)!r}" for f in fields)
        return f"StpredictSettings({body})"


settings = StpredictSettings()
