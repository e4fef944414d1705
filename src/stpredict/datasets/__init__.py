"""Datasets: a synthetic slide with known truth and loaders for local real data."""

from ._her2st import HER2ST_SECTIONS, her2st, her2st_dir
from ._synthetic import synthetic
from ._visium_hd_outs import write_visium_hd_outs

__all__ = ["HER2ST_SECTIONS", "her2st", "her2st_dir", "synthetic", "write_visium_hd_outs"]
