"""H&E-only slides: whole-slide images (pyramidal TIFF, OME-TIFF, SVS, NDPI, OpenSlide formats) and plain images.

The image element is built from the file's own pyramid levels as lazy dask arrays: opening a slide reads
its metadata only, and a block of a level is decoded when something (a prediction block, a crop, a write)
needs it. TIFF-based files are read with tifffile (a dependency already; BSD licence; one ``aszarr`` store
per level); formats only OpenSlide understands (MIRAX ``.mrxs``, Hamamatsu ``.vms``/``.vmu``, Ventana
``.bif``, ...) with openslide-python and its ``openslide-bin`` wheel (the optional extra ``stpredict[wsi]``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from spatialdata import SpatialData

from .. import _constants as C
from .._constants import OPENSLIDE_SUFFIXES, PLAIN_SUFFIXES, TIFF_SUFFIXES, WSI_SUFFIXES
from .._core._files import check_file, corrupt_file_error, tiff_truncation, tifffile_messages
from .._core._image import default_scale_factors
from .._core._mpp import micron_cs_name, pixel_and_micron_transforms
from .._core._validate import check_int, check_mpp_value, check_name
from .._logging import logger
from .._types import WsiBackend, check_choice
from ._slide_mpp import _isotropic, _plausible, _tiff_mpp
from ._utils import PathLike

__all__ = ["WSI_SUFFIXES", "SlideInfo", "read_wsi", "slide_info"]


#: File suffixes read with tifffile (TIFF containers).
#: The coarsest pyramid level kept: smaller levels (thumbnails) help nobody.
_MIN_LEVEL_PX = 64
#: Series names (tifffile's, lower case) of pictures that are not the slide: SVS/NDPI/SCN extras.
_NOT_THE_SLIDE = frozenset({"thumbnail", "label", "macro", "overview", "map"})
_EXPECTED_SLIDE = (
    "the slide (.svs, .tif, .ome.tif, .ndpi, .scn, .jpg, .png, …; for MIRAX the .mrxs file beside its folder)"
)
_RECOPY_SLIDE = (
    "Copy it from the scanner or download it again (compare its size with the original's): a transfer cut "
    "short leaves such files."
)


@dataclass
class SlideInfo:
    """What :func:`slide_info` finds in a slide file without reading its pixels.

    Parameters
    ----------
    path
        The file.
    backend
        ``"tifffile"``, ``"openslide"`` or ``"pillow"``.
    format
        What the file is (``"OME-TIFF"``, ``"Aperio SVS"``, ...).
    levels
        ``(height, width)`` of each pyramid level in the file, finest first.
    mpp
        Microns per full-resolution pixel, or ``None`` when the file does not say.
    mpp_source
        Where ``mpp`` came from (e.g. ``"OME PhysicalSizeX/Y"``), or why it is unknown.
    arrays
        One lazy array per level (``(c, y, x)`` dask arrays; ``(y, x, 3)`` NumPy for plain images), decoded
        only when sliced.

    """

    path: Path
    backend: str
    format: str
    levels: list[tuple[int, int]]
    mpp: float | None
    mpp_source: str
    arrays: list[Any] = field(default_factory=list, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the full-resolution level."""
        return self.levels[0]

    def describe(self) -> str:
        """A few human-readable lines: format, levels, pixel size and size in mm."""
        h, w = self.shape
        lines = [f"slide  {self.path.name}: {self.format}, read with {self.backend}"]
        if self.mpp is not None:
            lines.append(
                f"pixel size {self.mpp:.4f} µm/px ({self.mpp_source}); "
                f"{w * self.mpp / 1000:.2f} x {h * self.mpp / 1000:.2f} mm (x, y)"
            )
        else:
            lines.append(f"pixel size unknown ({self.mpp_source})")
        for i, (lh, lw) in enumerate(self.levels):
            factor = f", 1/{w / lw:.3g}" if i else ""
            lines.append(f"level {i}: {lw} x {lh} px (x, y){factor}")
        return "\n".join(lines)


def _default_id(path: Path) -> str:
    stem = path.name
    for suffix in (".ome.tiff", ".ome.tif", *WSI_SUFFIXES):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = re.sub(r"[^0-9A-Za-z_.-]+", "_", stem).strip("_.") or "slide"
    return stem


class _TiffLevel:
    """A level of a TIFF series as tifffile's zarr array that pickles: the file is reopened where it is unpickled.

    tifffile's ``aszarr`` store holds an open file handle, so a dask array made from it directly cannot be sent to
    the worker processes of a ``dask.distributed`` cluster (which need the file at the same path).
    """

    def __init__(self, path: Path, series: int, level: int, array: Any = None) -> None:
        self.path, self.series, self.level = Path(path).resolve(), series, level
        self._array = array
        z = self._open()
        self.shape, self.dtype, self.ndim, self.chunks = z.shape, z.dtype, z.ndim, z.chunks

    def _open(self) -> Any:
        if self._array is None:
            import tifffile
            import zarr

            tf = tifffile.TiffFile(self.path)
            self._array = zarr.open(tf.series[self.series].aszarr(level=self.level), mode="r")
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._open()[key]


def _tiff_format(tf) -> str:
    for flag, name in (
        ("is_ome", "OME-TIFF"),
        ("is_svs", "Aperio SVS"),
        ("is_ndpi", "Hamamatsu NDPI"),
        ("is_scn", "Leica SCN"),
        ("is_qpi", "PerkinElmer QPTIFF"),
        ("is_philips", "Philips TIFF"),
    ):
        if getattr(tf, flag, False):
            return name
    return "TIFF"


def _rgb_axes(shape: tuple[int, ...], axes: str) -> tuple[list[int], int, int, int] | None:
    """Indices of the other axes (read at 0) and of (samples, y, x), or ``None`` when the series is not RGB."""
    axes = axes.upper()
    if "Y" not in axes or "X" not in axes:
        return None
    colour = [i for i, a in enumerate(axes) if a in "SC" and shape[i] in (3, 4)]
    if len(colour) != 1:
        return None
    c, y, x = colour[0], axes.index("Y"), axes.index("X")
    others = [i for i in range(len(axes)) if i not in (c, y, x)]  # Z, T, ...: the first plane is read
    return others, c, y, x


def _tiff_slide(path: Path) -> SlideInfo:
    with tifffile_messages() as messages:  # tifffile logs the IFDs and tags past the end of a truncated file
        return _tiff_levels(path, messages)


def _tiff_levels(path: Path, messages: list[str]) -> SlideInfo:
    import dask.array as da
    import tifffile
    import zarr
    from dask.base import tokenize

    try:
        tf = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError) as exc:
        raise ValueError(f"{str(path)!r} is not a TIFF file tifffile can read ({exc}).") from exc
    # the slide is the largest RGB series that is not a thumbnail, label or macro photo of the glass
    series_rgb = [
        (si, series, found)
        for si, series in enumerate(tf.series)
        if (series.name or "").lower() not in _NOT_THE_SLIDE
        and (found := _rgb_axes(series.levels[0].shape, series.levels[0].axes)) is not None
    ]
    if not series_rgb:
        shapes = ", ".join(f"{s.name or '-'} {s.shape} {s.axes} {s.dtype}" for s in tf.series)
        tf.close()
        raise ValueError(
            f"{str(path)!r} holds no RGB image (series: {shapes}); stpredict reads RGB H&E slides. "
            "Convert a fluorescence or single-channel image to RGB first."
        )

    def hw(level, found) -> tuple[int, int]:
        _, _, y, x = found
        return level.shape[y], level.shape[x]

    si, chosen, found = max(series_rgb, key=lambda t: np.prod(hw(t[1].levels[0], t[2])))
    h0, w0 = hw(chosen.levels[0], found)
    keep = [(chosen, li, _rgb_axes(level.shape, level.axes)) for li, level in enumerate(chosen.levels)]
    if (
        len(chosen.levels) == 1
    ):  # no pyramid tifffile recognises: other images of the same aspect are its levels
        for _, series, f in series_rgb:
            h, w = hw(series.levels[0], f)
            if series is not chosen and h < h0 and abs(h / h0 * w0 / w - 1) < 0.02 + 2 / min(h, w):
                keep.append((series, 0, f))
    keep = [k for i, k in enumerate(keep) if i == 0 or min(hw(k[0].levels[k[1]], k[2])) >= _MIN_LEVEL_PX]
    keep.sort(key=lambda k: -np.prod(hw(k[0].levels[k[1]], k[2])))
    # a truncated file opens, and fails later inside the decoder: every tile of the levels read must be in it
    problem = tiff_truncation(
        (page for series, li, _ in keep for page in series.levels[li].pages), tf.filehandle.size, messages
    )
    if problem is not None:
        tf.close()
        raise corrupt_file_error(path, "Slide file", problem, fix=_RECOPY_SLIDE)
    if any(chosen.levels[0].shape[i] > 1 for i in found[0]):
        logger.warning(
            f"{path.name}: the slide image has axes {chosen.axes} {chosen.shape}; only the first plane of "
            f"{', '.join(chosen.axes[i] for i in found[0])} is read."
        )
    token = f"{path.resolve()}-{path.stat().st_mtime_ns}"
    si_all = {id(series): i for i, series in enumerate(tf.series)}
    arrays, levels = [], []
    for series, li, (others, c, y, x) in keep:
        level = series.levels[li]
        dtype = np.dtype(level.dtype)
        if dtype != np.uint8:
            tf.close()
            raise ValueError(
                f"{str(path)!r} stores {dtype} pixels; stpredict expects 8-bit RGB H&E (uint8). Convert the slide "
                "to 8 bits first."
            )
        z = _TiffLevel(path, si_all[id(series)], li, zarr.open(series.aszarr(level=li), mode="r"))
        # a name of its own: spatialdata takes "original-from-zarr" arrays for elements of a zarr store on disk
        arr = da.from_array(z, chunks=z.chunks, name=f"read-wsi-{tokenize(token, series.index, li)}")
        arr = arr[tuple(0 if i in others else slice(None) for i in range(arr.ndim))]
        c, y, x = (i - sum(o < i for o in others) for i in (c, y, x))
        arr = arr.transpose(c, y, x)[:3]
        arrays.append(arr)
        levels.append((arr.shape[1], arr.shape[2]))
    mpp, source = _tiff_mpp(tf, si)
    return SlideInfo(path, "tifffile", _tiff_format(tf), levels, mpp, source, arrays)


# --- OpenSlide --------------------------------------------------------------------------------


def _open_slide(path: Path):
    try:
        import openslide
    except ImportError as exc:
        raise ImportError(
            f"Reading {path.suffix!r} slides needs OpenSlide: `pip install 'stpredict[wsi]'` (installs openslide-python "
            "and the openslide-bin library). TIFF-based slides (.tif, .svs, .ndpi, OME-TIFF) need no extra."
        ) from exc
    try:
        return openslide.OpenSlide(str(path))
    except openslide.OpenSlideError as exc:
        raise ValueError(f"OpenSlide cannot read {str(path)!r}: {exc}") from exc


class _OpenSlideLevel:
    """A level of an OpenSlide slide as a lazily read array-like ``(y, x, 3)`` (transparent areas white)."""

    def __init__(self, path: Path, level: int, shape: tuple[int, int], downsample: float) -> None:
        self.path, self.level, self.downsample = path, level, downsample
        self.shape = (shape[0], shape[1], 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self._slide = None

    def __getstate__(self) -> dict[str, Any]:  # the OpenSlide handle does not pickle: reopen
        return {**self.__dict__, "_slide": None}

    def __getitem__(self, key) -> np.ndarray:
        ys, xs = key[0], key[1]
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        if self._slide is None:
            self._slide = _open_slide(self.path)
        region = self._slide.read_region(
            (round(x0 * self.downsample), round(y0 * self.downsample)), self.level, (x1 - x0, y1 - y0)
        )
        rgba = np.asarray(region, dtype=np.uint8)
        alpha = rgba[..., 3:4].astype(np.uint16)
        rgb = (
            rgba[..., :3] * alpha + 255 * (255 - alpha)
        ) // 255  # straight alpha, composited over white glass
        return rgb.astype(np.uint8)[:, :, key[2]] if len(key) > 2 else rgb.astype(np.uint8)


def _openslide_slide(path: Path, chunk: int) -> SlideInfo:
    import dask.array as da

    slide = _open_slide(path)
    props = slide.properties
    arrays, levels = [], []
    for li, ((w, h), ds) in enumerate(zip(slide.level_dimensions, slide.level_downsamples, strict=True)):
        if li and min(h, w) < _MIN_LEVEL_PX:
            continue
        level = _OpenSlideLevel(path, li, (h, w), float(ds))
        arrays.append(da.from_array(level, chunks=(chunk, chunk, 3), asarray=False).transpose(2, 0, 1))
        levels.append((h, w))
    mpp, source = None, "no openslide.mpp-x/y property"
    if "openslide.mpp-x" in props:
        x = float(props["openslide.mpp-x"])
        y = float(props.get("openslide.mpp-y", x))
        mpp, source = _plausible(*_isotropic(x, y, "openslide.mpp-x/y"))
    fmt = props.get("openslide.vendor", "OpenSlide")
    slide.close()
    return SlideInfo(path, "openslide", fmt, levels, mpp, source, arrays)


# --- plain images -----------------------------------------------------------------------------


def _plain_slide(path: Path) -> SlideInfo:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # whole-slide exports are legitimately large
    try:
        pil = Image.open(path)
        pil.load()  # decoded here, where a truncated file can be named
    except (OSError, SyntaxError, ValueError) as exc:
        raise corrupt_file_error(path, "Slide file", exc, fix=_RECOPY_SLIDE) from exc
    with pil:
        dpi, fmt = pil.info.get("dpi"), pil.format or path.suffix.lstrip(".").upper()
        if pil.mode == "RGBA":
            pil = pil.convert("RGB")
        elif pil.mode != "RGB":
            raise ValueError(
                f"{str(path)!r} is not an RGB image (mode {pil.mode!r}); stpredict expects an RGB H&E image. Convert "
                "it first, e.g. `PIL.Image.open(path).convert('RGB').save(new_path)`."
            )
        arr = np.asarray(pil, dtype=np.uint8)
    mpp, source = None, f"{fmt} files do not record a pixel size"
    if dpi and dpi[0]:
        x, y = 25400.0 / float(dpi[0]), 25400.0 / float(dpi[1] or dpi[0])
        mpp, source = _plausible(*_isotropic(x, y, f"{fmt} dpi"))
    return SlideInfo(path, "pillow", fmt, [arr.shape[:2]], mpp, source, [arr])


def _open(path: Path, backend: WsiBackend, chunk: int) -> SlideInfo:
    suffix = path.suffix.lower()
    if backend == "openslide":
        return _openslide_slide(path, chunk)
    if backend == "tifffile" or suffix in TIFF_SUFFIXES:
        return _tiff_slide(path)
    if suffix in OPENSLIDE_SUFFIXES:
        return _openslide_slide(path, chunk)
    if suffix in PLAIN_SUFFIXES:
        return _plain_slide(path)
    raise ValueError(
        f"{str(path)!r}: stpredict does not know {suffix!r} slides. It reads {', '.join(WSI_SUFFIXES)}; "
        "pass `backend='openslide'` for another format OpenSlide understands."
    )


def slide_info(path: PathLike, *, backend: WsiBackend = "auto") -> SlideInfo:
    """Format, pyramid levels and pixel size of a slide file, without reading its pixels.

    Parameters
    ----------
    path
        The slide file.
    backend
        As in :func:`read_wsi`.

    Returns
    -------
    A :class:`SlideInfo`; :meth:`SlideInfo.describe` prints it (``stpredict info slide.svs`` does).

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        When ``path`` does not exist or is a folder.
    ValueError
        When the file is truncated or corrupt: every tile of the levels read must lie within the file (checked
        from the TIFF's tile offsets, without decoding), or the format is not one stpredict reads.

    """
    path = check_file(path, "Slide file", expected=_EXPECTED_SLIDE)
    check_choice("backend", backend, WsiBackend)
    return _open(path, backend, 1024)


def read_wsi(
    path: PathLike,
    *,
    mpp: float | None = None,
    dataset_id: str | None = None,
    backend: WsiBackend = "auto",
    chunks: int = 1024,
) -> SpatialData:
    """Read an H&E-only slide into SpatialData, lazily, with its pixel size.

    The image element is the file's own pyramid as a multiscale image of dask arrays: nothing is
    decoded until a block is needed, and :func:`stpredict.tl.predict_dense` reads each block from
    the coarsest level fine enough for the model, so a 40x slide predicted at 2 µm never decodes
    its full-resolution level. Plain JPEG/PNG files have no pyramid: they are decoded into memory
    and a pyramid is computed from them.

    Parameters
    ----------
    path
        The slide: pyramidal or flat TIFF, OME-TIFF, Aperio ``.svs``, Hamamatsu ``.ndpi``, Leica
        ``.scn`` (all with tifffile), MIRAX ``.mrxs`` and other OpenSlide formats (with the extra
        ``stpredict[wsi]``), or a plain ``.jpg``/``.png``.
    mpp
        Microns per full-resolution pixel; overrides the file's. Default: from the file (OME
        ``PhysicalSizeX/Y``, Aperio ``MPP``, ``openslide.mpp-x/y``, TIFF resolution tags with a
        unit, PNG/JPEG dpi). A value outside 0.05–20 µm/px in the file (a 72 dpi screen default)
        counts as missing.
    dataset_id
        Section name: the image is ``"{dataset_id}_full_image"`` in the pixel coordinate system
        ``dataset_id`` and the micron system ``"{dataset_id}_um"``. Default: the file name without
        its suffix.
    backend
        ``"auto"`` (tifffile for TIFF-based files, OpenSlide for the rest), ``"tifffile"`` or
        ``"openslide"``.
    chunks
        Side of the dask chunks in pixels (a multiple of the file's tile size reads fastest).

    Returns
    -------
    A SpatialData with one multiscale ``(c, y, x)`` uint8 image; ``sdata.attrs["stpredict"]["slide"]``
    records the file, format, reader and where the pixel size came from.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        When ``path`` does not exist or is a folder.
    ValueError
        When the file records no pixel size and ``mpp`` is not given (the message says what the file
        holds), it is not an 8-bit RGB image, or it is truncated or corrupt (see :func:`slide_info`).

    Examples
    --------
    >>> sdata = stpredict.io.read_wsi("slide.svs")  # doctest: +SKIP
    >>> stpredict.tl.predict_dense(sdata, model, bins_um=[8, 16])  # doctest: +SKIP

    """
    path = Path(path)
    chunks = check_int("chunks", chunks)
    dataset_id = _default_id(path) if dataset_id is None else check_name("dataset_id", dataset_id)
    info = slide_info(path, backend=backend)
    if mpp is not None:
        mpp, mpp_source = check_mpp_value(mpp), "given"
    elif info.mpp is None:
        raise ValueError(
            f"{str(path)!r} does not record its pixel size ({info.mpp_source}). Pass `mpp=` with the value in µm "
            "per pixel: the scanner's (about 0.25 at 40x and 0.5 at 20x, times any downsampling of an export; the "
            "scanner's slide info shows it), or the one `stpredict read-st` infers from the spot grid of a paired "
            "spatial section of the same scan. `stpredict.datasets.write_slide(path, 'slide.ome.tif', mpp=...)` "
            "then writes a copy that records it (README: H&E-only slides)."
        )
    else:
        mpp, mpp_source = check_mpp_value(info.mpp, f"pixel size of {path.name}"), info.mpp_source
    return slide_sdata(info, mpp=mpp, mpp_source=mpp_source, dataset_id=dataset_id, chunks=chunks)


def slide_sdata(info: SlideInfo, *, mpp: float, mpp_source: str, dataset_id: str, chunks: int) -> SpatialData:
    """The SpatialData of an opened slide at a decided pixel size (what :func:`read_wsi` returns)."""
    import dask.array as da
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import set_transformation
    from spatialdata.transformations._utils import compute_coordinates
    from xarray import DataArray, Dataset, DataTree

    path = info.path
    transformations = pixel_and_micron_transforms(dataset_id, mpp=mpp)
    arrays = info.arrays
    if info.backend == "pillow":
        arr = da.from_array(np.moveaxis(arrays[0], -1, 0), chunks=(3, chunks, chunks))
        h, w = arr.shape[1:]
        arrays, f = [arr], 1
        for s in default_scale_factors((h, w)):
            f *= s
            arrays.append(
                da.coarsen(np.mean, arrays[0][:, : h // f * f, : w // f * f], {1: f, 2: f}).astype(np.uint8)
            )
    tree = {}
    for i, arr in enumerate(arrays):
        arr = arr.rechunk((3, chunks, chunks))
        image = DataArray(arr, dims=("c", "y", "x"), coords={"c": ["r", "g", "b"]})
        tree[f"scale{i}"] = Dataset({"image": image})
    element = DataTree.from_dict(tree)
    set_transformation(element, transformations, set_all=True)
    element = compute_coordinates(element)
    Image2DModel().validate(element)
    image_key = f"{dataset_id}_full_image"
    h, w = info.shape
    record = {
        "reader": "read_wsi",
        "path": str(path.resolve()),
        "format": info.format,
        "backend": info.backend,
        "image": image_key,
        "mpp": float(mpp),
        "mpp_source": mpp_source,
        "pixel_cs": dataset_id,
        "micron_cs": micron_cs_name(dataset_id),
        "levels": [list(map(int, s)) for s in ([(a.shape[1], a.shape[2]) for a in arrays])],
    }
    logger.info(
        f"Read {info.format} {path.name}: {w} x {h} px at {mpp:.4f} µm/px ({mpp_source}), "
        f"{w * mpp / 1000:.2f} x {h * mpp / 1000:.2f} mm, {len(arrays)} level(s); nothing decoded yet."
    )
    return SpatialData(images={image_key: element}, attrs={C.UNS_KEY: {"slide": record}})
