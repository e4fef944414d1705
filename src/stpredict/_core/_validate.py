"""The shared input checks of every public entry point: each error names the problem and the fix."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "MPP_RANGE",
    "check_counts",
    "check_image_array",
    "check_int",
    "check_model",
    "check_mpp_value",
    "check_name",
    "check_names",
    "check_number",
    "check_sequence",
    "check_table_counts",
    "check_unique",
]

#: Plausible full-resolution pixel sizes in µm: 0.05 (beyond any light microscope) to 20 (a thumbnail).
MPP_RANGE = (0.05, 20.0)
_SCANNERS = (
    "whole-slide scanners give 0.25 µm/px at 40× and 0.5 µm/px at 20×; legacy ST (HER2ST) images ~0.7 µm/px; "
    "Visium 'hires' images ~2–4 µm/px"
)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = 0.0,
    maximum: float | None = None,
    inclusive: bool = False,
) -> float:
    """``value`` as a finite float; by default strictly positive.

    ``minimum``/``maximum`` bound it (``inclusive`` for the minimum); ``None`` leaves a side open.
    """
    if not _is_real(value):
        hint = " (a number, not a string)" if isinstance(value, str) else ""
        raise TypeError(f"`{name}` must be a number{hint}, got {value!r} ({type(value).__name__}).")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"`{name}` must be finite, got {value!r}.")
    if minimum is not None and (v < minimum if inclusive else v <= minimum):
        op = ">=" if inclusive else ">"
        raise ValueError(f"`{name}` must be {op} {minimum:g}, got {value!r}.")
    if maximum is not None and v > maximum:
        raise ValueError(f"`{name}` must be <= {maximum:g}, got {value!r}.")
    return v


def check_int(name: str, value: Any, *, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int >= ``minimum`` (integral floats such as ``8.0`` are accepted; ``8.5`` is an error)."""
    if isinstance(value, bool) or not (
        isinstance(value, numbers.Integral) or (_is_real(value) and float(value).is_integer())
    ):
        kind = "a whole number" if _is_real(value) else f"an int, not {type(value).__name__}"
        raise TypeError(f"`{name}` must be {kind}, got {value!r}.")
    v = int(value)
    if v < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value!r}.")
    if maximum is not None and v > maximum:
        raise ValueError(f"`{name}` must be <= {maximum}, got {value!r}.")
    return v


def check_mpp_value(mpp: Any, what: str = "mpp") -> float:
    """A pixel size in µm per pixel within :data:`MPP_RANGE`; the message lists typical scanner values."""
    if isinstance(mpp, str):
        raise TypeError(
            f"`{what}` must be a number of µm per pixel, got the string {mpp!r}; pass e.g. {what}=0.5."
        )
    v = check_number(what, mpp)
    lo, hi = MPP_RANGE
    if not lo <= v <= hi:
        raise ValueError(
            f"`{what}`={v:g} µm/px is outside the plausible range {lo:g}–{hi:g} µm/px ({_SCANNERS}). Check the unit "
            "(µm per pixel, not pixels per µm or nm) and the image's metadata."
        )
    return v


def check_name(name: str, value: Any) -> str:
    """A non-empty element name (str) without path separators."""
    if isinstance(value, os.PathLike) or not isinstance(value, str):
        raise TypeError(f"`{name}` must be a name (str), got {value!r} ({type(value).__name__}).")
    if not value or value.strip() != value or "/" in value or value.startswith("."):
        raise ValueError(
            f"`{name}`={value!r} is not a valid element name: use a non-empty name without '/', surrounding spaces "
            "or a leading dot."
        )
    return value


def check_names(
    name: str, value: Any, *, available: Sequence[str] | None = None, kind: str = "element"
) -> list[str]:
    """One name or a list of names (str); with ``available``, each must be one of them."""
    if isinstance(value, str):
        values = [value]
    elif isinstance(value, os.PathLike) or _is_real(value) or not hasattr(value, "__iter__"):
        raise TypeError(
            f"`{name}` must be a name or a list of names, got {value!r} ({type(value).__name__})."
        )
    else:
        values = check_sequence(name, value)
    bad = [v for v in values if not isinstance(v, str)]
    if bad:
        raise TypeError(f"`{name}` must contain names (str); got {bad[:3]!r}.")
    check_unique(name, values)
    if available is not None:
        missing = [v for v in values if v not in available]
        if missing:
            plural = kind if kind.endswith("s") else f"{kind}s"
            what = (
                f"{kind.capitalize()} {missing[0]!r}"
                if len(missing) == 1
                else f"{plural.capitalize()} {missing}"
            )
            raise KeyError(f"{what} not found (`{name}`); available {plural}: {list(available)}.")
    return values


def check_unique(name: str, values: Sequence[Any]) -> None:
    """Refuse duplicates, naming them."""
    seen, dup = set(), []
    for v in values:
        if v in seen and v not in dup:
            dup.append(v)
        seen.add(v)
    if dup:
        raise ValueError(f"`{name}` has duplicate entries {dup[:10]}; each must appear once.")


def check_counts(X: Any, what: str, *, integer: bool = True, sample: int = 200_000) -> None:
    """Raw counts: finite, non-negative and whole numbers (what the normalisation recipe expects).

    Sparse or dense; at most ``sample`` stored values are checked (evenly spread, deterministic). With
    ``integer=False`` (expected counts, e.g. a simulation's truth) fractions are allowed.
    """
    import scipy.sparse as sp

    vals = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if vals.size == 0:
        if sp.issparse(X) and 0 not in X.shape:  # sparse, but nothing stored: every value is 0
            raise ValueError(_no_counts(what, X.shape))
        raise ValueError(f"{what} is empty (no observations or no genes).")
    if vals.size > sample:
        vals = vals[:: vals.size // sample]
    vals = np.asarray(vals, dtype=np.float64)
    n_bad = int((~np.isfinite(vals)).sum())
    if n_bad:
        raise ValueError(
            f"{what} contains {n_bad} NaN/infinite value(s); pass raw counts (fill missing measurements with 0, or drop "
            "those observations)."
        )
    if (vals < 0).any():
        raise ValueError(
            f"{what} contains negative values (min {vals.min():.4g}): raw counts are non-negative. Pass the counts, not "
            "scaled or centred data (e.g. `adata.layers['counts']`)."
        )
    frac = np.abs(vals - np.round(vals)) > 1e-6
    if integer and frac.any():
        raise ValueError(
            f"{what} holds non-integer values (e.g. {vals[frac][0]:.4g}): it looks already normalised or "
            "log-transformed, and stpredict normalises counts itself (log1p of total-normalised counts). Put the raw "
            "counts in `X` (e.g. `table.X = table.layers['counts']`)."
        )


def check_image_array(dtype: Any, n_channels: int | None, what: str) -> None:
    """An RGB uint8 image (``c=3``): gray, RGBA, uint16 and float images get a conversion recipe."""
    fixes = []
    if n_channels != 3:
        if n_channels == 1:
            fixes.append("it is grayscale (c=1): H&E must be RGB, e.g. `np.repeat(img, 3, axis=0)`")
        elif n_channels == 4:
            fixes.append("it has 4 channels (RGBA): drop alpha, e.g. `image.isel(c=[0, 1, 2])`")
        else:
            fixes.append(f"it has c={n_channels} channels; an H&E image has 3 (RGB)")
    dt = np.dtype(dtype)
    if dt != np.uint8:
        if np.issubdtype(dt, np.floating):
            fixes.append(
                f"its dtype is {dt} (floats): scale to 0–255 and convert, e.g. `(img * 255).round().astype(np.uint8)` "
                "for values in [0, 1]"
            )
        elif np.issubdtype(dt, np.integer):
            fixes.append(
                f"its dtype is {dt}: convert to 8 bit, e.g. `skimage.util.img_as_ubyte(img)` (uint16: `img >> 8`)"
            )
        else:
            fixes.append(f"its dtype is {dt}; convert to uint8")
    if fixes:
        raise ValueError(f"{what} must be an RGB uint8 image (c=3, values 0–255): " + "; ".join(fixes) + ".")


def check_model(model: Any, *, dense: bool | None = None) -> None:
    """An stpredict model object (not a path or a name); with ``dense``, of the right kind; and trained."""
    if isinstance(model, str | os.PathLike):
        raise TypeError(
            f"`model` must be a trained stpredict model, got the path or name {str(model)!r}; load a checkpoint first "
            "(`model = stpredict.model.load(path)`) or train one (`stpredict.tl.train`)."
        )
    if not hasattr(model, "_check_trained") or not hasattr(model, "genes"):
        raise TypeError(f"`model` must be a trained stpredict model, got {type(model).__name__}.")
    if dense and not getattr(model, "dense", False):
        raise TypeError(
            f"{type(model).__name__} predicts one value per footprint, not a dense map; use "
            "`stpredict.tl.predict_shapes(sdata, model, shapes=[...])` for it."
        )
    model._check_trained()


def check_sequence(name: str, value: Any, *, allow_empty: bool = True) -> list[Any]:
    """A list from a sequence (or one scalar); strings, paths and mappings are refused."""
    if isinstance(value, str | bytes | os.PathLike | dict):
        raise TypeError(f"`{name}` must be a list of values, got {value!r} ({type(value).__name__}).")
    if _is_real(value):
        return [value]
    try:
        values = list(value)
    except TypeError:
        raise TypeError(
            f"`{name}` must be a list of values, got {value!r} ({type(value).__name__})."
        ) from None
    if not values and not allow_empty:
        raise ValueError(f"`{name}` is empty.")
    return values


def check_unique_var_names(table: Any, what: str) -> None:
    """A table whose gene names (``var_names``) are unique."""
    if not table.var_names.is_unique:
        dup = list(table.var_names[table.var_names.duplicated()].unique()[:5])
        raise ValueError(
            f"{what} has duplicate gene names {dup}; make them unique (`table.var_names_make_unique()`)."
        )


def _no_counts(what: str, shape: tuple[int, ...]) -> str:
    return (
        f"{what} has no counts (all {shape[0]} × {shape[1]} values are 0): there is nothing to learn or score "
        "from it. Check that `X` holds the raw counts (e.g. `table.X = table.layers['counts']`, or read the "
        "section again), or leave this section out."
    )


def check_table_counts(table: Any, what: str) -> None:
    """A table of measured raw counts: observations, unique gene names, counts (:func:`check_counts`), not all 0."""
    if table.n_obs == 0 or table.n_vars == 0:
        raise ValueError(f"{what} is empty ({table.n_obs} observations × {table.n_vars} genes).")
    check_unique_var_names(table, what)
    check_counts(table.X, what)
    if not np.asarray(table.X.sum()).any():  # counts are non-negative: a zero sum is a table of zeros
        raise ValueError(_no_counts(what, table.shape))
