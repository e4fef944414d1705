"""The package logger.

stpredict logs through ``logging.getLogger("stpredict")`` and never calls
:func:`logging.basicConfig`; the level follows :attr:`stpredict.settings.verbosity`.
"""

from __future__ import annotations

import logging

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
