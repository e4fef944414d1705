"""Preprocessing: pixel sizes, micron coordinate systems, tissue masks, tile selection, pooled footprints (no torch)."""

from .._core._mpp import get_mpp, is_micron_cs, micron_cs_name, set_mpp
from ._pool import pool_footprints
from ._tiles import select_tiles, shannon_bits
from ._tissue import tiles_mask, tissue_mask

__all__ = [
    "get_mpp",
    "is_micron_cs",
    "micron_cs_name",
    "pool_footprints",
    "select_tiles",
    "set_mpp",
    "shannon_bits",
    "tiles_mask",
    "tissue_mask",
]
