"""One progress style for the whole package: tqdm bars, for Python loops and for dask computations alike.

Every bar is switched by :attr:`stpredict.settings.progress_bar` (or a function's ``progress=``). In Jupyter the
widget bar is used when ``ipywidgets`` is installed; otherwise the plain text bar (tqdm's notebook bar would only
print a ``TqdmWarning: IProgress not found``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Iterator
from typing import Any

from ._settings import settings

__all__ = ["dask_progress", "progress_enabled", "tqdm"]


@functools.cache
def _tqdm_class() -> type:
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm as cls
    else:
        from tqdm.std import tqdm as cls
    return cls


def progress_enabled(progress: bool | None) -> bool:
    """``progress`` if given, else :attr:`stpredict.settings.progress_bar`."""
    return settings.progress_bar if progress is None else bool(progress)


def tqdm(iterable: Any = None, *, desc: str, progress: bool | None = None, **kwargs: Any):
    """A tqdm bar in stpredict's style (``dynamic_ncols``; disabled unless :func:`progress_enabled`)."""
    kwargs.setdefault("dynamic_ncols", True)
    return _tqdm_class()(iterable, desc=desc, disable=not progress_enabled(progress), **kwargs)


def _has_distributed_client() -> bool:
    try:
        from distributed import default_client

        default_client()
    except (ImportError, ValueError):
        return False
    return True


@contextlib.contextmanager
def dask_progress(desc: str, *, progress: bool | None = None) -> Iterator[None]:
    """A tqdm bar over the tasks of the dask computations run inside the block (local schedulers).

    On a ``dask.distributed`` client the tasks run on the workers and are followed in the client's dashboard, so no
    bar is drawn here.
    """
    if not progress_enabled(progress) or _has_distributed_client():
        yield
        return
    from tqdm.dask import TqdmCallback

    with TqdmCallback(desc=desc, tqdm_class=_tqdm_class(), dynamic_ncols=True):
        yield
