"""``tl.predict_shapes``: one prediction per shape (spot, bin, cell) for any stpredict model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spatialdata import SpatialData

from .. import _docs
from .._core import ElementWriter, check_he, describe_shapes, get_mpp, shapes_table
from .._core._validate import check_int, check_model, check_name, check_names
from .._logging import logger
from ._records import prediction_record, values_text

__all__ = ["predict_shapes"]


@_docs.doc_params(
    image_key=_docs.image_key,
    key_added=_docs.key_added_prefix,
    device=_docs.device,
    overwrite=_docs.overwrite,
)
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
    map over each footprint (computed at ``train_mpp`` by the dense engine, only in the blocks the
    shapes touch); :class:`~stpredict.model.SpotRegressor` crops each footprint and predicts it on its
    own. The tables are laid out like those of :func:`~stpredict.tl.predict_dense`, so
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
    {image_key}
    {key_added}
    batch_size
        Crops per forward pass (SpotRegressor). Dense models compute their map block by block and no
        longer take it (deprecated for them).
    {device}
    {overwrite}

    Returns
    -------
    Names of the tables added: ``f"{{key_added}}_{{shapes}}"`` for each shapes element, with ``X`` =
    predicted expression (shapes × genes, float32; NaN for shapes off the image), ``obs`` linked
    to the shapes (``region``, ``instance_id`` = the shapes index), ``obsm["spatial"]`` = shape
    centroids and ``uns["stpredict"]`` = what ``X`` holds (``values``, in words), the model
    (``model``, ``model_info``: encoder, initial weights, checkpoint), the genes (``model_genes``,
    ``n_genes``), the normalisation ``recipe``, the image (``image_key``, ``mpp``), ``train_mpp``, the
    ``footprint`` (geometry, median diameter in µm) and ``stpredict_version``.

    """
    check_model(model)
    shapes = check_names("shapes", shapes, available=list(sdata.shapes), kind="shapes")
    image_key, _ = check_he(sdata, image_key)
    key_added = check_name("key_added", model.key if key_added is None else key_added)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size)
    names = [f"{key_added}_{s}" for s in shapes]
    writer = ElementWriter(sdata, names, overwrite=overwrite, by="tl.predict_shapes")
    kw = {"image_key": image_key, "device": device}
    if batch_size is not None:
        kw["batch_size"] = batch_size
    mpp = float(get_mpp(sdata, image_key))
    params = prediction_record(model, image_key=image_key, mpp=mpp)
    with writer:
        for s, name in zip(shapes, names, strict=True):
            X = model.predict_shapes(sdata, s, **kw)
            if getattr(model, "dense", False):
                per_row = (
                    f"the mean of the model's dense map at {model.train_mpp:g} µm/px over the map pixels whose "
                    f"centres lie in one shape of {s!r}"
                )
            else:
                per_row = (
                    f"predicted from one square crop of {model.config.get('crop_factor', 1):g} × the diameter of one "
                    f"shape of {s!r}, centred on it and resampled to {model.config.get('input_size')} px"
                )
            rec = {
                **params,
                "values": values_text(model, per_row + " (NaN: off the image)"),
                "shapes": s,
                "footprint": describe_shapes(sdata, s, image_key, mpp),
            }
            writer.add(name, shapes_table(sdata, s, X, model.genes, rec))
    logger.info(f"Added {names}.")
    return names
