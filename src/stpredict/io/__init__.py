"""Readers that turn spatial transcriptomics outputs into SpatialData with known pixel sizes."""

from ._hest import read_hest
from ._st import read_st
from ._store import recover_store, written_elements
from ._table import read_table
from ._visium import read_visium
from ._visium_hd import read_visium_hd
from ._wsi import SlideInfo, read_wsi, slide_info

__all__ = [
    "SlideInfo",
    "read_hest",
    "read_st",
    "read_table",
    "read_visium",
    "read_visium_hd",
    "read_wsi",
    "recover_store",
    "slide_info",
    "written_elements",
]
