"""Small helpers shared across namespaces."""

from __future__ import annotations

from typing import Any


def full_resolution(element: Any):
    """The full-resolution ``DataArray`` of an image/labels element (``scale0`` of a multiscale one)."""
    if hasattr(element, "children") and "scale0" in element.children:
        return next(iter(element["scale0"].values()))
    return element
