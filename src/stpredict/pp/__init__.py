"""Preprocessing: pixel sizes and micron coordinate systems."""

from ._mpp import get_mpp, is_micron_cs, micron_cs_name, set_mpp

__all__ = ["get_mpp", "is_micron_cs", "micron_cs_name", "set_mpp"]
