"""Datasets: a synthetic slide with known truth and loaders for local real data."""

from ._her2st import HER2ST_SECTIONS, her2st, her2st_dir
from ._hest import hest, hest_dir, write_hest_sample
from ._slide import write_slide
from ._synthetic import synthetic
from ._visium_hd_outs import write_visium_hd_outs
from ._visium_outs import write_visium_outs

__all__ = [
    "HER2ST_SECTIONS",
    "her2st",
    "her2st_dir",
    "hest",
    "hest_dir",
    "synthetic",
    "write_hest_sample",
    "write_slide",
    "write_visium_hd_outs",
    "write_visium_outs",
]
