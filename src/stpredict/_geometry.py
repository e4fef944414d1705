"""Footprint geometry shared by training and prediction: shapes → pixel footprints of an image."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .pp._mpp import is_micron_cs

if TYPE_CHECKING:
    from spatialdata import SpatialData

    from .model._aggregate import Footprints

__all__ = ["shapes_footprints"]


def _affine(t) -> np.ndarray:
    return np.asarray(t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)


def shapes_footprints(sdata: SpatialData, shapes_key: str, image_key: str, instances=None) -> Footprints:
    """Footprints of a shapes element in the full-resolution pixel grid of an image.

    The two are related through a coordinate system they share (a micron system first).
    ``instances`` selects and orders shapes by index (default: all, in shapes order).
    """
    from spatialdata.transformations import get_transformation

    from .model._aggregate import Footprints

    if shapes_key not in sdata.shapes:
        raise KeyError(f"Shapes {shapes_key!r} not found; available shapes: {list(sdata.shapes)}.")
    if image_key not in sdata.images:
        raise KeyError(f"Image {image_key!r} not found; available images: {list(sdata.images)}.")
    shp = sdata.shapes[shapes_key]
    img_ts = get_transformation(sdata.images[image_key], get_all=True)
    shp_ts = get_transformation(shp, get_all=True)
    common = sorted((cs for cs in shp_ts if cs in img_ts), key=lambda cs: not is_micron_cs(cs))
    if not common:
        raise ValueError(
            f"Shapes {shapes_key!r} and image {image_key!r} share no coordinate system (shapes: {sorted(shp_ts)}, "
            f"image: {sorted(img_ts)}); they cannot be aligned."
        )
    M = np.linalg.inv(_affine(img_ts[common[0]])) @ _affine(shp_ts[common[0]])
    if instances is not None:
        missing = ~np.isin(np.asarray(instances), shp.index.to_numpy())
        if missing.any():
            raise ValueError(
                f"{int(missing.sum())} instance(s) have no shape in {shapes_key!r} (e.g. {list(np.asarray(instances)[missing][:5])})."
            )
        shp = shp.loc[np.asarray(instances)]
    kinds = set(shp.geometry.geom_type)
    if kinds == {"Point"}:
        if "radius" not in shp:
            raise ValueError(f"Point shapes {shapes_key!r} need a 'radius' column (circles).")
        fp = Footprints(np.c_[shp.geometry.x, shp.geometry.y], radii=shp["radius"].to_numpy(float))
    elif kinds <= {"Polygon", "MultiPolygon"}:
        c = shp.geometry.centroid
        fp = Footprints(np.c_[c.x, c.y], geometries=shp.geometry.to_numpy())
    else:
        raise ValueError(f"Shapes {shapes_key!r} have unsupported geometry types {sorted(kinds)}.")
    return fp.affine(M)
