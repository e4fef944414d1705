"""What every prediction table records in ``uns["stpredict"]``: its values, the model, the image and the footprints.

A reader of a table written by :func:`~stpredict.tl.predict_dense` or :func:`~stpredict.tl.predict_shapes`
(or of the zarr store it was saved to) learns from this record, without the source, what ``X`` holds and in
which units, which model made it (and from which checkpoint and encoder weights), the genes, the image's
pixel size and the footprint each row stands for. Values are strings, numbers, booleans, lists and dicts
only (no ``None``), so the record survives a zarr or h5ad round trip.
"""

from __future__ import annotations

from typing import Any

from .._core import drop_none
from .._version import __version__

__all__ = ["prediction_record", "values_text"]


def prediction_record(model: Any, *, image_key: str, mpp: float) -> dict[str, Any]:
    """The part of the record every prediction table of ``model`` on this image shares.

    Keys: ``model`` (class name), ``model_info`` (:meth:`~stpredict.model.BaseModel.provenance`: key,
    encoder and its initial weights, architecture, epochs, checkpoint), ``model_genes`` / ``n_genes``
    (the table's ``var_names``, in order), ``recipe`` (genes, ``target_sum``, ``log1p``), ``image_key``,
    ``mpp`` (µm per pixel of the image), ``train_mpp`` and ``stpredict_version``.
    """
    info = model.provenance() if hasattr(model, "provenance") else {"class": type(model).__name__}
    return drop_none(
        {
            "model": type(model).__name__,
            "model_info": info,
            "model_genes": list(model.genes),
            "n_genes": len(model.genes),
            "recipe": model.recipe.to_dict(),
            "image_key": image_key,
            "mpp": float(mpp),
            "train_mpp": float(model.train_mpp),
            "stpredict_version": __version__,
        }
    )


def values_text(model: Any, per_row: str) -> str:
    """``uns["stpredict"]["values"]``: what ``X`` holds, in the model's recipe units, and what one row is."""
    return f"predicted {model.recipe.describe()}; one column per gene (var_names); each row: {per_row}"
