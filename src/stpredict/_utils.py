"""Small helpers shared across namespaces."""

from __future__ import annotations

from typing import Any


def full_resolution(element: Any):
    """The full-resolution ``DataArray`` of an image/labels element (``scale0`` of a multiscale one)."""
    if hasattr(element, "children") and "scale0" in element.children:
        return next(iter(element["scale0"].values()))
    return element


def pyramid_levels(element: Any) -> list[tuple[Any, float]]:
    """``(dask (c, y, x), full-resolution pixels per level pixel)`` for every level, finest first."""
    full = full_resolution(element)
    w0 = full.sizes["x"]
    arrs = (
        [next(iter(element[k].values())) for k in element.children]
        if hasattr(element, "children")
        else [full]
    )
    return sorted(((a.transpose("c", "y", "x").data, w0 / a.sizes["x"]) for a in arrs), key=lambda t: t[1])


def coarsest_level(levels: list[tuple[Any, float]], max_factor: float) -> tuple[Any, float]:
    """The coarsest level whose pixels are at most ``max_factor`` full-resolution pixels (else the finest)."""
    best = levels[0]
    for level in levels:
        if level[1] <= max_factor * (1 + 1e-6):
            best = level
    return best
