"""Readers that turn spatial transcriptomics outputs into SpatialData with known pixel sizes."""

from ._st import read_st
from ._store import recover_store, written_elements
from ._visium_hd import read_visium_hd

__all__ = ["read_st", "read_visium_hd", "recover_store", "written_elements"]
