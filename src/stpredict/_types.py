"""``Literal`` types for every choice stpredict offers, and the one check that validates them."""

from __future__ import annotations

from typing import Any, Literal, get_args

__all__ = [
    "Aggregation",
    "BinsAs",
    "Coverage",
    "LRSchedule",
    "MapAs",
    "MapDtype",
    "MapSpace",
    "ModelName",
    "OutActivation",
    "PresetName",
    "Resample",
    "TableWeighting",
    "TileMethod",
    "Upsample",
    "WsiBackend",
    "check_choice",
]

#: How pixels of a footprint are combined: their mean (the map is an expression level) or sum.
Aggregation = Literal["mean", "sum"]
#: Footprint membership: a pixel belongs when its centre is inside, or with its covered fraction.
Coverage = Literal["center", "fraction"]
#: Tile scoring of :func:`stpredict.pp.select_tiles`.
TileMethod = Literal["shannon", "otsu"]
#: Registered model classes (:func:`stpredict.tl.train`'s ``model=``).
ModelName = Literal["pixnet", "spot_regressor", "linear_probe"]
#: Training presets; ``"auto"`` picks ``"paper"`` on CUDA, else ``"cpu_spots"`` for spot-sized training footprints
#: (≥ 50 µm; models that have it) and ``"cpu"`` for bins and cells.
PresetName = Literal["auto", "cpu", "cpu_spots", "paper"]
#: Output activation of the PixNet head.
OutActivation = Literal["identity", "softplus", "relu"]
#: What the PixNet head predicts: log-normalised values (``"log"``) or log-rates of a count model (``"rate"``).
MapSpace = Literal["log", "rate"]
#: How PixNet's decoder doubles its grid: bilinear resize + 1×1 convolution, or the paper's 2×2 transposed convolution.
Upsample = Literal["resize", "deconv"]
#: How the losses of several supervising tables combine in a step.
TableWeighting = Literal["pooled", "equal"]
#: Learning-rate schedule of one training call.
LRSchedule = Literal["constant", "cosine"]
#: What bin tables annotate (:func:`stpredict.tl.predict_dense`, :func:`stpredict.io.read_visium_hd`): polygons,
#: a bin-id raster, or the raster for big tables and bins of one map pixel.
BinsAs = Literal["auto", "shapes", "labels"]
#: What a dense map stores: one channel per gene, or the network's last features and its linear head.
MapAs = Literal["genes", "latent"]
#: The stored dense map's precision.
MapDtype = Literal["float32", "float16"]
#: The reader of slide files: tifffile for TIFF-family files, OpenSlide for the others; ``"auto"`` picks.
WsiBackend = Literal["auto", "tifffile", "openslide"]
#: Resampling filter of the window reader.
Resample = Literal["box", "bilinear"]


def check_choice(name: str, value: Any, choices: Any) -> None:
    """Raise a :class:`ValueError` naming the argument and its allowed values when ``value`` is not one of them.

    ``choices`` is a ``Literal`` type (or any iterable of allowed values).
    """
    allowed = get_args(choices) or tuple(choices)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}.")
