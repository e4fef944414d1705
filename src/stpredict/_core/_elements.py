"""Tables linked to shapes, and joining tables by footprint (writing them is :mod:`._store`'s job)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from spatialdata import SpatialData
from spatialdata.models import TableModel

from .. import _constants as C
from .._logging import logger

__all__ = ["drop_none", "match_rows", "shapes_table"]


def drop_none(v: Any) -> Any:
    """``v`` with ``None`` dropped from every dict and list in it: what AnnData ``uns`` stores with any writer."""
    if isinstance(v, Mapping):
        return {str(k): drop_none(x) for k, x in v.items() if x is not None}
    if isinstance(v, list | tuple):
        return [drop_none(x) for x in v if x is not None]
    return v


def shapes_table(sdata: SpatialData, by: str, X: np.ndarray, var_names: Sequence[str], uns: dict) -> AnnData:
    """A table with one row per shape of ``by`` (in its order), linked to it.

    ``X`` as float32, ``obs`` = ``region`` / ``instance_id`` (the shapes index), ``obsm["spatial"]`` =
    shape centroids in the shapes' own coordinates, ``uns["stpredict"]`` = ``uns``.
    """
    shp = sdata.shapes[by]
    obs = pd.DataFrame(
        {C.REGION_KEY: pd.Categorical([by] * len(shp)), C.INSTANCE_KEY: shp.index.to_numpy()},
        index=pd.Index(shp.index.astype(str), name=None),
    )
    table = AnnData(X=np.asarray(X, np.float32), obs=obs, var=pd.DataFrame(index=pd.Index(list(var_names))))
    cen = shp.geometry.centroid
    table.obsm[C.SPATIAL_KEY] = np.c_[cen.x, cen.y]
    table.uns[C.UNS_KEY] = drop_none(dict(uns))
    return TableModel.parse(table, region=by, region_key=C.REGION_KEY, instance_key=C.INSTANCE_KEY)


def match_rows(
    pred: AnnData, truth: AnnData, pred_name: str, truth_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of ``pred`` and ``truth`` for the same footprints (same shapes element and instance id)."""
    pa, ta = pred.uns.get("spatialdata_attrs", {}), truth.uns.get("spatialdata_attrs", {})
    if pa.get("region") != ta.get("region"):
        raise ValueError(
            f"Prediction table {pred_name!r} annotates {pa.get('region')!r} but truth table {truth_name!r} annotates "
            f"{ta.get('region')!r}: they are not the same footprints. Predict for the truth's shapes, e.g. "
            f"`tl.predict_dense(sdata, model, shapes=[{ta.get('region')!r}])`, and evaluate that table."
        )
    pid = pd.Index(pred.obs[pa["instance_key"]].to_numpy())
    tid = pd.Index(truth.obs[ta["instance_key"]].to_numpy())
    common = tid[tid.isin(pid)]
    if len(common) == 0:
        raise ValueError(f"No footprint of {truth_name!r} has a prediction in {pred_name!r}.")
    missing = len(tid) - len(common)
    if missing:
        logger.warning(
            f"{missing} footprint(s) of {truth_name!r} have no prediction in {pred_name!r}; skipped."
        )
    return pid.get_indexer(common), tid.get_indexer(common)
