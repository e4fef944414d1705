"""Preprocessing: pixel sizes, micron coordinate systems, tile selection."""

from ._mpp import get_mpp, is_micron_cs, micron_cs_name, set_mpp
from ._tiles import select_tiles, shannon_bits

__all__ = ["get_mpp", "is_micron_cs", "micron_cs_name", "select_tiles", "set_mpp", "shannon_bits"]
