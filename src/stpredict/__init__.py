"""stpredict: predict dense spatial gene expression from H&E histology on SpatialData.

Namespaces: :mod:`stpredict.pp` (pixel sizes, tissue and tile selection), :mod:`stpredict.tl`
(tools), :mod:`stpredict.pl` (plots), :mod:`stpredict.io` (readers), :mod:`stpredict.datasets` and the
torch layers :mod:`stpredict.model` (user model classes), :mod:`stpredict.module` (networks) and
:mod:`stpredict.train` (training). Every namespace is imported on first use, so ``import stpredict``
is fast and loads neither SpatialData nor torch; ``pp``, ``io``, ``datasets``, ``pl``,
``tl.aggregate`` and ``tl.evaluate`` never load torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from ._logging import logger
from ._settings import settings
from ._version import __version__

if TYPE_CHECKING:
    from . import datasets, io, model, module, pl, pp, tl, train

_NAMESPACES = ("datasets", "io", "model", "module", "pl", "pp", "tl", "train")

__all__ = [
    "__version__",
    "datasets",
    "io",
    "logger",
    "model",
    "module",
    "pl",
    "pp",
    "settings",
    "tl",
    "train",
]


def __getattr__(name: str):
    # Namespaces load on first access: SpatialData, scanpy and (for model/module/train) torch are heavy.
    if name in _NAMESPACES:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module 'stpredict' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMESPACES})
