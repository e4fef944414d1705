"""Images: pyramid levels, the one window reader, the default H&E, and building image elements.

Every pixel stpredict feeds a network is read by :meth:`Pyramid.read`: training images resampled to the
training pixel size, the blocks of the dense engine and the crops of the spot-level baseline. It picks
the coarsest pyramid level that is still at least as fine as the output, fills what lies outside the
image with white (slide glass) and resamples with a fractional box, so an output pixel's value depends
only on its absolute position, not on the window it was read in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from spatialdata import SpatialData
from spatialdata.models import Image2DModel
from spatialdata.transformations import get_transformation

from .._constants import MICRON_CS_SUFFIX
from .._logging import logger
from .._types import Resample, check_choice
from ._mpp import is_micron_cs
from ._validate import check_image_array, check_mpp_value

__all__ = [
    "Pyramid",
    "check_he",
    "check_rgb",
    "default_image_key",
    "default_scale_factors",
    "full_resolution",
    "parse_rgb_image",
    "section_name",
    "section_names",
]

_FILTERS = {"box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR}


def full_resolution(element: Any):
    """The full-resolution ``DataArray`` of an image/labels element (``scale0`` of a multiscale one)."""
    if hasattr(element, "children") and "scale0" in element.children:
        return next(iter(element["scale0"].values()))
    return element


def check_rgb(sdata: SpatialData, image_key: str) -> None:
    """Raise when ``images[image_key]`` is missing or not an RGB uint8 image (the message says how to convert)."""
    if not isinstance(image_key, str):
        raise TypeError(f"`image_key` must be the name of an image (str), got {image_key!r}.")
    if image_key not in sdata.images:
        raise KeyError(f"Image {image_key!r} not found; available images: {list(sdata.images)}.")
    full = full_resolution(sdata.images[image_key])
    check_image_array(full.dtype, full.sizes.get("c"), f"Image {image_key!r}")


def check_he(sdata: SpatialData, image_key: str | None) -> tuple[str, float]:
    """The H&E image to run on (default :func:`default_image_key`) and its pixel size, both checked.

    RGB uint8, and a pixel size within :data:`~._validate.MPP_RANGE`: what training and every prediction need.
    """
    from ._mpp import get_mpp

    image_key = default_image_key(sdata) if image_key is None else image_key
    check_rgb(sdata, image_key)
    mpp = get_mpp(sdata, image_key)
    check_mpp_value(mpp, f"pixel size of image {image_key!r}")
    return image_key, mpp


class Pyramid:
    """The levels of one RGB image, finest first, and the window reader of stpredict.

    Parameters
    ----------
    levels
        ``(array (3, y, x), fx, fy)`` per level: a NumPy or dask array and how many full-resolution
        pixels one level pixel spans in x and y.
    cache
        Keep each level that is read from in memory as NumPy (for many small reads, e.g. crops).

    """

    def __init__(self, levels: Sequence[tuple[Any, float, float]], *, cache: bool = False) -> None:
        if not levels:
            raise ValueError("A pyramid needs at least one level.")
        self.levels = sorted(levels, key=lambda t: t[1])
        full = self.levels[0][0]
        self.shape: tuple[int, int] = (
            round(full.shape[1] * self.levels[0][2]),
            round(full.shape[2] * self.levels[0][1]),
        )
        self.cache = cache
        self._arrays: dict[int, np.ndarray] = {}

    @classmethod
    def from_element(cls, element: Any, *, cache: bool = False) -> Pyramid:
        """The levels of a (multiscale) SpatialData image element."""
        full = full_resolution(element)
        h0, w0 = full.sizes["y"], full.sizes["x"]
        arrays = (
            [next(iter(element[k].values())) for k in element.children]
            if hasattr(element, "children")
            else [full]
        )
        levels = [(a.transpose("c", "y", "x").data, w0 / a.sizes["x"], h0 / a.sizes["y"]) for a in arrays]
        return cls(levels, cache=cache)

    @classmethod
    def from_sdata(cls, sdata: SpatialData, image_key: str, *, cache: bool = False) -> Pyramid:
        """The pyramid of ``sdata.images[image_key]``, checked to be RGB uint8."""
        check_rgb(sdata, image_key)
        return cls.from_element(sdata.images[image_key], cache=cache)

    @classmethod
    def from_array(cls, image: np.ndarray) -> Pyramid:
        """A one-level pyramid of an in-memory ``(y, x, 3)`` uint8 RGB image."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (y, x, 3) uint8 RGB, got {image.shape} {image.dtype}.")
        return cls([(np.moveaxis(image, -1, 0), 1.0, 1.0)])

    def level(self, scale: float) -> tuple[Any, float, float, int]:
        """``(array, fx, fy, index)`` of the coarsest level whose pixels span at most ``scale`` full-resolution pixels."""
        best = 0
        for i, (_, fx, _) in enumerate(self.levels):
            if fx <= scale * (1 + 1e-6):
                best = i
        arr, fx, fy = self.levels[best]
        if self.cache:
            if best not in self._arrays:
                self._arrays[best] = np.ascontiguousarray(np.asarray(arr))
            arr = self._arrays[best]
        return arr, fx, fy, best

    def read(
        self,
        box: tuple[float, float, float, float],
        shape: tuple[int, int],
        *,
        resample: Resample | None = None,
    ) -> np.ndarray:
        """The full-resolution box ``(x0, y0, x1, y1)`` resampled to ``shape`` ``(h, w)``, as ``(h, w, 3)`` uint8.

        Outside the image is white. ``resample`` defaults to ``"box"`` (an area average) when the
        output is coarser than the level read, else ``"bilinear"``.
        """
        x0, y0, x1, y1 = (float(v) for v in box)
        h, w = int(shape[0]), int(shape[1])
        if h < 1 or w < 1 or x1 <= x0 or y1 <= y0:
            raise ValueError(f"Cannot read box {box} into shape {shape}.")
        arr, fx, fy, _ = self.level(min((x1 - x0) / w, (y1 - y0) / h))
        bx0, by0, bx1, by1 = x0 / fx, y0 / fy, x1 / fx, y1 / fy  # the box in level pixels
        ix0, iy0 = math.floor(bx0 + 1e-9), math.floor(by0 + 1e-9)
        ix1, iy1 = max(math.ceil(bx1 - 1e-9), ix0 + 1), max(math.ceil(by1 - 1e-9), iy0 + 1)
        _, H, W = arr.shape
        win = np.full((iy1 - iy0, ix1 - ix0, 3), 255, np.uint8)
        sy0, sy1, sx0, sx1 = max(iy0, 0), min(iy1, H), max(ix0, 0), min(ix1, W)
        if sy1 > sy0 and sx1 > sx0:
            win[sy0 - iy0 : sy1 - iy0, sx0 - ix0 : sx1 - ix0] = np.moveaxis(
                np.asarray(arr[:, sy0:sy1, sx0:sx1]), 0, -1
            )
        local = (bx0 - ix0, by0 - iy0, bx1 - ix0, by1 - iy0)
        if win.shape[:2] == (h, w) and np.allclose(local, (0, 0, w, h), atol=1e-9):
            return win
        if resample is None:
            resample = "box" if (bx1 - bx0) >= w * (1 - 1e-9) else "bilinear"
        check_choice("resample", resample, Resample)
        return np.array(Image.fromarray(win).resize((w, h), _FILTERS[resample], box=local))

    def resampled(self, factor: float) -> tuple[np.ndarray, tuple[float, float]]:
        """The whole image with pixels of ``factor`` full-resolution pixels, as ``(H, W, 3)`` uint8.

        Returns
        -------
        ``(array, (sx, sy))`` where ``sx, sy`` are full-resolution pixels per output pixel (the sizes
        are rounded, so these differ from ``factor`` by less than a pixel over the image).

        """
        H0, W0 = self.shape
        Wt, Ht = max(1, round(W0 / factor)), max(1, round(H0 / factor))
        return self.read((0, 0, W0, H0), (Ht, Wt)), (W0 / Wt, H0 / Ht)


def default_image_key(sdata: SpatialData) -> str:
    """The H&E to use when ``image_key`` is not given: the largest RGB uint8 image (full resolution).

    Visium HD data also carries downscaled ``hires``/``lowres`` copies; the largest one is the scan.
    """
    sizes = {}
    for k, el in sdata.images.items():
        full = full_resolution(el)
        if full.sizes.get("c") == 3 and full.dtype == np.uint8:
            sizes[k] = full.sizes["y"] * full.sizes["x"]
    if not sizes:
        if not sdata.images:
            raise ValueError(
                "The SpatialData object has no image; add the H&E (e.g. with `stpredict.io.read_st`)."
            )
        for k, el in sdata.images.items():  # say what is wrong with the images there are
            full = full_resolution(el)
            check_image_array(
                full.dtype, full.sizes.get("c"), f"No RGB uint8 image in the SpatialData object; image {k!r}"
            )
    best = max(sizes, key=sizes.get)
    if sum(v == sizes[best] for v in sizes.values()) > 1:
        raise ValueError(f"Several RGB images of the same size {sorted(sizes)}; pass `image_key=`.")
    if len(sizes) > 1:
        logger.info(f"Using image {best!r}, the largest RGB image; pass `image_key=` to choose another.")
    return best


def section_name(sdata: SpatialData, image_key: str | None = None) -> str:
    """The name a section goes by in progress bars, evaluation summaries and plot titles.

    It is the ``dataset_id`` the readers give the section (``"C5"`` for ``datasets.her2st("C5")``): the pixel
    coordinate system of the H&E that has a micron coordinate system ``"{dataset_id}_um"`` next to it; failing
    that, the image key without its ``_full_image`` suffix, or ``"section"`` for a SpatialData without images.
    """
    if image_key is None:
        try:
            image_key = default_image_key(sdata)
        except ValueError:
            return "section"
    systems = set(get_transformation(sdata.images[image_key], get_all=True))
    for cs in sorted(systems):
        if is_micron_cs(cs) and cs != MICRON_CS_SUFFIX and cs[: -len(MICRON_CS_SUFFIX) - 1] in systems:
            return cs[: -len(MICRON_CS_SUFFIX) - 1]
    return image_key.removesuffix("_full_image") or image_key


def section_names(sdatas: Sequence[SpatialData], image_keys: Sequence[str | None] | None = None) -> list[str]:
    """:func:`section_name` of each section, made unique (``"synthetic"``, ``"synthetic_2"``, ...)."""
    names: list[str] = []
    keys = list(image_keys) if image_keys is not None else [None] * len(sdatas)
    for s, k in zip(sdatas, keys, strict=True):
        name = section_name(s, k)
        unique, i = name, 1
        while unique in names:
            i += 1
            unique = f"{name}_{i}"
        names.append(unique)
    return names


def default_scale_factors(shape: Sequence[int], smallest: int = 512) -> list[int]:
    """Factors of 2 until the longest side of the coarsest level is at most ``smallest`` pixels.

    At least one level is always added, so every image stpredict writes is multiscale.
    """
    factors: list[int] = [2] if min(shape) >= 2 else []
    size = max(shape) // 2 if factors else max(shape)
    while size > smallest and len(factors) < 8:
        factors.append(2)
        size //= 2
    return factors


def parse_rgb_image(
    arr: np.ndarray,
    transformations: dict[str, Any],
    scale_factors: Sequence[int] | None = None,
):
    """An RGB ``(y, x, 3)`` uint8 array as a multiscale ``(c, y, x)`` SpatialData image."""
    data = np.moveaxis(arr, -1, 0)
    if scale_factors is None:
        scale_factors = default_scale_factors(data.shape[1:])
    return Image2DModel.parse(
        data,
        dims=("c", "y", "x"),
        c_coords=["r", "g", "b"],
        scale_factors=list(scale_factors) or None,
        transformations=transformations,
        chunks=(3, 2048, 2048),
    )


def level_paths(element_dir: Path) -> list[str]:
    """The zarr arrays of a stored multiscale image, finest first (from its OME multiscales metadata)."""
    import zarr

    attrs = zarr.open_group(str(element_dir), mode="r").attrs.asdict()
    datasets = attrs.get("ome", attrs)["multiscales"][0]["datasets"]
    return [str(Path(element_dir) / d["path"]) for d in datasets]
