"""Store maintenance: finish or undo interrupted stpredict writes."""

from __future__ import annotations

from .._core._store import recover_store, written_elements

__all__ = ["recover_store", "written_elements"]
