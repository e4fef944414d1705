"""``tl.predict_shapes``: one prediction per shape (spot, bin, cell) for any stpredict model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._logging import logger
from ._aggregate import check_new_names, shapes_table, store_table

if TYPE_CHECKING:
    from spatialdata import SpatialData

__all__ = ["predict_shapes"]


def predict_shapes(
    sdata: SpatialData,
    model: Any,
    *,
    shapes: str | Sequence[str],
    image_key: str | None = None,
    key_added: str | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Predict expression for every shape of one or several shapes elements, with any stpredict model.

    :class:`~stpredict.model.PixNet` and :class:`~stpredict.model.LinearProbe` average their dense
    map over each footprint (computed tile by tile at ``train_mpp``, in memory: for whole slides
    and Visium HD bins use :func:`stpredict.tl.predict_dense`);
    :class:`~stpredict.model.SpotRegressor` crops each footprint and predicts it on its own.
    The tables are laid out like those of :func:`~stpredict.tl.predict_dense`, so
    :func:`~stpredict.tl.evaluate` compares models on the same footprints.

    Parameters
    ----------
    sdata
        SpatialData with the H&E and the shapes (circles or polygons).
    model
        A trained :class:`~stpredict.model.PixNet`, :class:`~stpredict.model.SpotRegressor` or
        :class:`~stpredict.model.LinearProbe`.
    shapes
        Shapes element name(s).
    image_key
        The H&E (default: the largest RGB image).
    key_added
        Prefix of the new tables (default ``model.key``: ``"pixnet"``, ``"spot_regressor"``,
        ``"linear_probe"``).
    batch_size
        Tiles (dense models) or crops (SpotRegressor) per forward pass.
    device
        ``"auto"``/``"cpu"``/``"cuda"``/``"mps"``; default :attr:`stpredict.settings.device`.
    overwrite
        Replace existing tables of the same names.

    Returns
    -------
    Names of the tables added: ``f"{key_added}_{shapes}"`` for each shapes element, with ``X`` =
    predicted expression (shapes × genes, float32; NaN for shapes off the image), ``obs`` linked
    to the shapes (``region``, ``instance_id`` = the shapes index), ``obsm["spatial"]`` = shape
    centroids and ``uns["stpredict"]`` = model class, recipe and image.

    """
    from .. import __version__
    from ..model._base import BaseModel
    from ..model._data import default_image_key
    from ..pp._mpp import get_mpp

    if not isinstance(model, BaseModel):
        raise TypeError(f"model must be a trained stpredict model, got {type(model).__name__}.")
    model._check_trained()
    shapes = [shapes] if isinstance(shapes, str) else list(shapes)
    for s in shapes:
        if s not in sdata.shapes:
            raise KeyError(f"Shapes {s!r} not found; available shapes: {list(sdata.shapes)}.")
    image_key = image_key or default_image_key(sdata)
    key_added = key_added or model.key
    names = [f"{key_added}_{s}" for s in shapes]
    check_new_names(sdata, names, overwrite)
    kw = {"image_key": image_key, "device": device}
    if batch_size is not None:
        kw["batch_size"] = int(batch_size)
    params = {
        "model": type(model).__name__,
        "model_genes": list(model.genes),
        "recipe": model.recipe.to_dict(),
        "image_key": image_key,
        "mpp": float(get_mpp(sdata, image_key)),
        "train_mpp": float(model.train_mpp),
        "stpredict_version": __version__,
    }
    for s, name in zip(shapes, names, strict=True):
        X = model.predict_shapes(sdata, s, **kw)
        store_table(sdata, name, shapes_table(sdata, s, X, model.genes, {**params, "shapes": s}))
    logger.info(f"Added {names}.")
    return names
