"""The package logger.

stpredict logs through ``logging.getLogger("stpredict")`` and never calls
:func:`logging.basicConfig`; the level follows :attr:`stpredict.settings.verbosity`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

logger = logging.getLogger("stpredict")

_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}


def _ensure_handler() -> None:
    """Attach one stderr handler to the package logger (only once, only ours)."""
    if not any(getattr(h, "_stpredict", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s [stpredict] %(message)s"))
        handler._stpredict = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False


def set_verbosity(verbosity: int) -> None:
    """Set the package logger's level from a scanpy-style verbosity (0 errors … 3 debug)."""
    _ensure_handler()
    logger.setLevel(_LEVELS[max(0, min(3, int(verbosity)))])


class _NoParentFilter(logging.Filter):
    """Drops ome-zarr's ``no parent found for <Label ...>`` warning (see :func:`quiet_ome_zarr`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("no parent found for")


@contextlib.contextmanager
def quiet_ome_zarr() -> Iterator[None]:
    """Silence ome-zarr's ``no parent found for <ome_zarr.reader.Label ...>`` while stpredict reads a store.

    SpatialData labels do not name a source image, so ome-zarr warns once per labels element on every read; the
    message says nothing about the user's data. Only that message, only inside the block.
    """
    log = logging.getLogger("ome_zarr.reader")
    flt = _NoParentFilter()
    log.addFilter(flt)
    try:
        yield
    finally:
        log.removeFilter(flt)
