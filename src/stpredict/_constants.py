"""Every default key, element name and physical constant used by stpredict, in one place."""

from __future__ import annotations

from typing import Final

# --- coordinate systems -------------------------------------------------------------------
#: Suffix that marks a coordinate system in microns. A reader with ``dataset_id="C2"`` writes
#: the pixel system ``"C2"`` and the micron system ``"C2_um"``; one without writes ``"global"``
#: and ``"um"``.
MICRON_CS_SUFFIX: Final = "um"
DEFAULT_PIXEL_CS: Final = "global"

# --- element names ------------------------------------------------------------------------
IMAGE_KEY: Final = "he"
SPOTS_KEY: Final = "spots"
TRUTH_KEY: Final = "truth"
DOMAINS_KEY: Final = "domains"
CELLS_KEY: Final = "cells"
ST_SPOTS_KEY: Final = "st_spots"
VISIUM_SPOTS_KEY: Final = "visium_spots"
KEY_ADDED: Final = "pixnet"


# --- slide files ---------------------------------------------------------------------------
#: Slide suffixes read with tifffile (TIFF and its scanner variants).
TIFF_SUFFIXES: Final = (".tif", ".tiff", ".btf", ".tf2", ".tf8", ".svs", ".ndpi", ".scn", ".qptiff")
#: Suffixes only OpenSlide reads.
OPENSLIDE_SUFFIXES: Final = (".mrxs", ".vms", ".vmu", ".bif", ".svslide")
#: Plain images, decoded whole into memory.
PLAIN_SUFFIXES: Final = (".jpg", ".jpeg", ".png")
#: Every suffix :func:`stpredict.io.read_wsi` accepts.
WSI_SUFFIXES: Final = TIFF_SUFFIXES + OPENSLIDE_SUFFIXES + PLAIN_SUFFIXES


#: ``tl.predict_dense(bins_as="auto")``: bin tables with more bins than this annotate a bin-id raster (Labels) instead
#: of one polygon per bin (a 6.5 × 6.5 mm Visium HD capture area has ~10.6 million 2 µm bins).
MAX_BIN_SHAPES: Final = 1_000_000
#: ``tl.predict_dense``: above this many bins in all tables (a 6.5 mm Visium HD capture area has ~10.6 million 2 µm
#: bins, which take ~3.8 GB), a warning says what the tables' metadata will take in memory (~200 bytes a bin).
WARN_BINS: Final = 15_000_000
#: ``tl.predict_dense(max_pixel_bins=...)``: tables of bins of one map pixel (the map's own pixels, e.g. 2 µm bins of a
#: 2 µm map) are built up to this many bins, a whole capture area and a half; above it the map holds the values.
MAX_PIXEL_BINS: Final = 15_000_000


def square_key(bin_um: int | float) -> str:
    """Element name of square bins of side ``bin_um`` µm, as Space Ranger names them (``square_008um``)."""
    return f"square_{round(bin_um):03d}um"


# --- table columns ------------------------------------------------------------------------
REGION_KEY: Final = "region"
INSTANCE_KEY: Final = "instance_id"
SPATIAL_KEY: Final = "spatial"
DOMAIN_COL: Final = "domain"
EXPECTED_LAYER: Final = "expected"
UNS_KEY: Final = "stpredict"

# --- legacy ST / Visium geometry ----------------------------------------------------------
ST_SPOT_DIAMETER_UM: Final = 100.0
ST_PITCH_UM: Final = 200.0
VISIUM_SPOT_DIAMETER_UM: Final = 55.0
VISIUM_PITCH_UM: Final = 100.0
VISIUM_HD_BINS_UM: Final = (2, 8, 16)


#: The demo's measured wall time (README, CLI help and docs say the same; see benchmarks/README.md "The demo").
DEMO_TIME: Final = "about 1 minute on 2 CPU cores"
