"""stpredict: predict dense spatial gene expression from H&E histology on SpatialData.

Namespaces: :mod:`stpredict.pp` (pixel sizes, preprocessing), :mod:`stpredict.tl` (tools),
:mod:`stpredict.pl` (plots), :mod:`stpredict.io` (readers), :mod:`stpredict.datasets` and, loaded
lazily because it imports torch, :mod:`stpredict.model`.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from . import datasets, io, pl, pp, tl
from ._logging import logger
from ._settings import settings

try:
    __version__ = version("stpredict")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from . import model

__all__ = ["datasets", "io", "logger", "model", "pl", "pp", "settings", "tl"]


def __getattr__(name: str):
    # torch and timm are heavy: stpredict.model is imported on first access only.
    if name == "model":
        return import_module(".model", __name__)
    raise AttributeError(f"module 'stpredict' has no attribute {name!r}")
