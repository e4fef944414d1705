"""The pixel size of a slide file, from what its writer recorded: OME-XML, TIFF resolution tags, vendor metadata."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from .._core._validate import MPP_RANGE

_UM_PER = {"m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "μm": 1.0, "nm": 1e-3, "inch": 25400.0}


def _plausible(mpp: float | None, source: str) -> tuple[float | None, str]:
    """Drop a pixel size that cannot be a microscope's (screen defaults such as 72 dpi), saying why."""
    if mpp is None:
        return None, source
    lo, hi = MPP_RANGE
    if lo <= mpp <= hi:
        return mpp, source
    return None, (
        f"the file says {mpp:.4g} µm/px ({source}), outside the plausible {lo:g}–{hi:g} µm/px: "
        "probably a default of the software that wrote it, not the scanner's pixel size"
    )


def _isotropic(x: float, y: float, source: str) -> tuple[float | None, str]:
    """The pixel size of square pixels; for anisotropic ones ``None`` and why (``mpp=`` can still be given)."""
    if abs(x - y) > 1e-3 * max(x, y):
        return None, f"{source} gives anisotropic pixels (x {x:.6g}, y {y:.6g} µm/px)"
    return (x + y) / 2, source


# --- tifffile ---------------------------------------------------------------------------------


def _ome_mpp(xml: str, image: int = 0) -> tuple[float | None, str]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, "unreadable OME-XML"
    all_pixels = [el for el in root.iter() if el.tag.endswith("Pixels")]
    pixels = all_pixels[image] if image < len(all_pixels) else None
    if pixels is None or pixels.get("PhysicalSizeX") is None:
        return None, "OME-XML without PhysicalSizeX"
    size = {}
    for ax in ("X", "Y"):
        own = pixels.get(f"PhysicalSize{ax}") is not None
        value = pixels.get(f"PhysicalSize{ax}" if own else "PhysicalSizeX")
        unit = pixels.get(f"PhysicalSize{ax if own else 'X'}Unit", "µm")
        if unit not in _UM_PER:
            return None, f"OME PhysicalSize{ax}Unit {unit!r} is not a length unit stpredict knows"
        size[ax] = float(value) * _UM_PER[unit]
    return _isotropic(size["X"], size["Y"], "OME PhysicalSizeX/Y")


def _tag_mpp(page) -> tuple[float | None, str]:
    tags = page.tags
    xres, yres, unit = tags.get("XResolution"), tags.get("YResolution"), tags.get("ResolutionUnit")
    if xres is None or unit is None:
        return None, "no TIFF resolution tags"
    unit_um = {2: 25400.0, 3: 1e4}.get(int(unit.value))
    if unit_um is None:
        return None, "TIFF resolution tags without a unit (ResolutionUnit NONE)"

    def per_px(tag) -> float:
        num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
        return unit_um * den / num if num else math.inf

    x = per_px(xres)
    y = per_px(yres) if yres is not None else x
    what = "inch" if unit_um == 25400.0 else "centimetre"
    source = f"TIFF resolution tags (pixels per {what})"
    return _isotropic(x, y, source)


def _tiff_mpp(tf, series_index: int = 0) -> tuple[float | None, str]:
    """The pixel size the slide's image records: OME-XML, then Aperio's description, then resolution tags."""
    from tifffile.tifffile import svs_description_metadata

    keyframe = tf.series[series_index].keyframe
    found: list[tuple[float | None, str]] = []
    if tf.is_ome and tf.ome_metadata:
        found.append(_ome_mpp(tf.ome_metadata, series_index))
    if tf.is_svs:
        try:
            meta = svs_description_metadata(keyframe.description)
        except ValueError:
            meta = {}
        if "MPP" in meta:
            found.append((float(meta["MPP"]), "Aperio ImageDescription MPP"))
    found.append(_tag_mpp(keyframe))
    reasons = []
    for mpp, source in found:
        mpp, source = _plausible(mpp, source)
        if mpp is not None:
            return mpp, source
        reasons.append(source)
    return None, "; ".join(dict.fromkeys(reasons))
