"""Plots: a gene's dense map over the H&E, measured vs predicted, per-gene scores."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from spatialdata import SpatialData

from .. import _constants as C
from .. import _docs
from .._core import (
    check_rgb,
    default_image_key,
    full_resolution,
    get_mpp,
    match_rows,
    normalize_counts,
    recipe_from_table,
    section_name,
    summarize_pcc,
)
from .._core._latent import decode_lazy, map_head
from .._core._validate import check_number, check_sequence
from .._logging import logger
from ..pp._tissue import tissue_mask

__all__ = ["compare", "expression_map", "gene_scores"]


def _finish(
    fig, ax, show: bool | None, return_fig: bool, save: str | os.PathLike | bool | None = None, name: str = ""
):
    """Save (``save``), show (``show``, default: on an interactive backend) and return as scanpy does."""
    if save:
        path = Path(f"{name}.png" if save is True else save)
        if not path.suffix:
            path = path.with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, bbox_inches="tight")
        logger.info(f"saved {path}")
    if return_fig:
        return fig
    if show is None:
        show = plt.get_backend().lower() != "agg"
        if not show and not save:
            logger.debug("Not shown (non-interactive backend); pass save='file.png' or show=True.")
    if show:
        plt.show()
        return None
    return ax


#: The default colour limits: the 1st and 99th percentiles of what is drawn (over tissue), as squidpy's ``"p1"``.
ROBUST_LIMITS = ("p1", "p99")


def _limit(values: np.ndarray, v: float | str | None, name: str) -> float | None:
    """A colour limit: a number, ``"pN"`` (the N-th percentile of the finite ``values``) or ``None`` (min/max)."""
    if v is None or (isinstance(v, (int, float, np.number)) and not isinstance(v, bool)):
        return None if v is None else float(v)
    if isinstance(v, str) and v.startswith("p"):
        try:
            q = float(v[1:])
        except ValueError:
            q = -1.0
        if 0 <= q <= 100:
            finite = values[np.isfinite(values)]
            return float(np.percentile(finite, q)) if finite.size else None
    raise ValueError(
        f"`{name}` must be a number, a percentile such as 'p1' or 'p99' (of the values drawn), or None; got {v!r}."
    )


def _limits(
    values: np.ndarray, vmin: float | str | None, vmax: float | str | None
) -> tuple[float | None, float | None]:
    """``(vmin, vmax)`` resolved on ``values``; an empty range is widened so a flat map still draws."""
    lo, hi = _limit(values, vmin, "vmin"), _limit(values, vmax, "vmax")
    if lo is not None and hi is not None and hi <= lo:
        lo, hi = lo - 0.5, lo + 0.5
    return lo, hi


def _scale_bar(ax, length_um: float | None, extent: tuple[float, float, float, float]) -> None:
    x0, x1, y1, y0 = extent
    width = x1 - x0
    if length_um is None:
        nice = np.array([10, 20, 50, 100, 200, 500, 1000, 2000, 5000])
        length_um = float(nice[np.searchsorted(nice, width / 5) - 1]) if width / 5 >= 10 else width / 5
    xs = x0 + 0.05 * width
    yb = y1 - 0.05 * (y1 - y0)
    ax.plot([xs, xs + length_um], [yb, yb], color="black", lw=3, solid_capstyle="butt")
    ax.text(xs, yb - 0.02 * (y1 - y0), f"{length_um:g} µm", va="bottom", ha="left", fontsize=8)


def _tissue_box(
    mask: np.ndarray, mpp: float, size_um: tuple[float, float]
) -> tuple[float, float, float, float]:
    """The tissue's bounding box in µm (map pixels of ``mpp``), with a margin of 5% of its size (at least 20 µm)."""
    W_um, H_um = size_um
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return 0.0, 0.0, W_um, H_um
    x0, x1, y0, y1 = xs.min() * mpp, (xs.max() + 1) * mpp, ys.min() * mpp, (ys.max() + 1) * mpp
    m = max(20.0, 0.05 * max(x1 - x0, y1 - y0))
    return max(0.0, x0 - m), max(0.0, y0 - m), min(W_um, x1 + m), min(H_um, y1 + m)


@_docs.doc_params(key=_docs.key_read, image_key=_docs.image_key, show=_docs.show_save)
def expression_map(
    sdata: SpatialData,
    gene: str,
    *,
    key: str = C.KEY_ADDED,
    image_key: str | None = None,
    alpha: float = 0.6,
    cmap: str = "magma",
    vmin: float | str | None = ROBUST_LIMITS[0],
    vmax: float | str | None = ROBUST_LIMITS[1],
    crop: Sequence[float] | Literal["tissue"] | None = "tissue",
    mask_background: bool = True,
    title: str | None = None,
    scale_bar_um: float | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """The dense map of one gene over the H&E, in microns, with a colour bar and a scale bar.

    Only the requested channel is read (and only inside ``crop``), so it is fast on maps with
    hundreds of genes.

    Parameters
    ----------
    sdata
        SpatialData with a dense map written by :func:`stpredict.tl.predict_dense`.
    gene
        Gene (channel) to draw.
    {key}
    {image_key}
    alpha
        Opacity of the map over the H&E.
    cmap
        Matplotlib colour map of the expression.
    vmin, vmax
        Colour limits: numbers, or percentiles of the values drawn (over tissue, inside ``crop``) as ``"p1"`` /
        ``"p99"`` (the default, so a few extreme pixels do not flatten the rest), or ``None`` for the minimum and
        maximum (as in scanpy and squidpy).
    crop
        ``"tissue"`` (default): the bounding box of the tissue (:func:`stpredict.pp.tissue_mask`) with a small
        margin; ``(x0, y0, x1, y1)`` in µm from the image's top-left corner; ``None``: the whole image.
    mask_background
        Hide the map outside the tissue mask (:func:`stpredict.pp.tissue_mask`), where
        :func:`stpredict.tl.predict_dense` predicts nothing (its no-data value, 0). NaN pixels are never drawn.
    title
        Axes title (default: the section and the gene, e.g. ``"C5 · ERBB2 (predicted)"``, the section named as in
        :func:`stpredict.tl.evaluate`).
    scale_bar_um
        Scale bar length in µm (default: a round length of about a fifth of the width).
    ax
        Axes to draw into (default: a new figure).
    {show}

    Returns
    -------
    The axes (or the figure with ``return_fig=True``; ``None`` when shown).

    Examples
    --------
    ::

        stp.pl.expression_map(sdata, "ERBB2")  # cropped to the tissue
        stp.pl.expression_map(sdata, "ERBB2", crop=(2000, 2000, 3000, 3000), alpha=0.8)  # a 1 mm window

    """
    dense_key = f"{key}_dense"
    if dense_key not in sdata.images:
        raise KeyError(
            f"No dense map {dense_key!r}; run `stpredict.tl.predict_dense(sdata, model, key_added={key!r})`."
        )
    image_key = image_key or default_image_key(sdata)
    check_rgb(sdata, image_key)
    dense = full_resolution(sdata.images[dense_key])
    head = map_head(sdata, dense_key)  # a latent map: the genes are its linear head
    genes = [str(c) for c in dense.coords["c"].values] if head is None else head[2]
    if gene not in genes:
        raise KeyError(
            f"Gene {gene!r} is not in the map {dense_key!r} ({len(genes)} genes, e.g. {genes[:5]})."
        )
    he = full_resolution(sdata.images[image_key])
    mpp, dmpp = get_mpp(sdata, image_key), get_mpp(sdata, dense_key)
    W_um, H_um = he.sizes["x"] * mpp, he.sizes["y"] * mpp
    full_mask = (
        tissue_mask(sdata, image_key, dense.shape[1:]) if (mask_background or crop == "tissue") else None
    )
    if crop is None:
        x0, y0, x1, y1 = 0.0, 0.0, W_um, H_um
    elif isinstance(crop, str):
        if crop != "tissue":
            raise ValueError(f"crop must be 'tissue', None or (x0, y0, x1, y1) in µm, got {crop!r}.")
        x0, y0, x1, y1 = _tissue_box(full_mask, dmpp, (W_um, H_um))
    else:
        vals = check_sequence("crop", crop, allow_empty=False)
        if len(vals) != 4:
            raise ValueError(f"crop must be (x0, y0, x1, y1) in µm, got {crop!r}.")
        x0, y0, x1, y1 = (check_number("crop", v, minimum=None) for v in vals)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"crop must be (x0, y0, x1, y1) in µm with x1 > x0 and y1 > y0, got {crop}.")
    if x1 <= 0 or y1 <= 0 or x0 >= W_um or y0 >= H_um:
        raise ValueError(
            f"crop {crop} (µm) does not overlap the image, which spans x 0–{W_um:.0f} µm and y 0–{H_um:.0f} µm."
        )
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, W_um), min(y1, H_um)
    alpha = check_number("alpha", alpha, minimum=0, maximum=1, inclusive=True)
    # H&E: read only the crop, at about the map's resolution
    step = max(1, round(dmpp / mpp))
    hs = (
        slice(int(y0 / mpp), int(np.ceil(y1 / mpp)), step),
        slice(int(x0 / mpp), int(np.ceil(x1 / mpp)), step),
    )
    rgb = np.moveaxis(np.asarray(he.data[:, hs[0], hs[1]]), 0, -1)
    ds = (slice(int(y0 / dmpp), int(np.ceil(y1 / dmpp))), slice(int(x0 / dmpp), int(np.ceil(x1 / dmpp))))
    if head is None:
        values = np.asarray(dense.data[genes.index(gene), ds[0], ds[1]], dtype=np.float32)
    else:
        i = genes.index(gene)  # one gene, decoded chunk by chunk
        one = decode_lazy(dense.data[:, ds[0], ds[1]], head[0][i : i + 1], head[1][i : i + 1])
        values = np.asarray(one[0].compute(), dtype=np.float32)
    values = np.ma.masked_invalid(values)  # NaN: no data (off the tissue)
    if mask_background:
        values = np.ma.masked_where(~full_mask[ds[0], ds[1]], values)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, max(2.5, 5.5 * (y1 - y0) / (x1 - x0))), layout="constrained")
    else:
        fig = ax.figure
    he_extent = (
        hs[1].start * mpp,
        hs[1].start * mpp + rgb.shape[1] * step * mpp,
        hs[0].start * mpp + rgb.shape[0] * step * mpp,
        hs[0].start * mpp,
    )
    ax.imshow(rgb, extent=he_extent)
    d_extent = (
        ds[1].start * dmpp,
        ds[1].start * dmpp + values.shape[1] * dmpp,
        ds[0].start * dmpp + values.shape[0] * dmpp,
        ds[0].start * dmpp,
    )
    drawn = np.ma.filled(values.astype(np.float32), np.nan)
    if full_mask is not None:  # limits over tissue, also when the background is drawn
        drawn = np.where(full_mask[ds[0], ds[1]], drawn, np.nan)
    lo, hi = _limits(drawn, vmin, vmax)
    im = ax.imshow(values, extent=d_extent, cmap=cmap, alpha=alpha, interpolation="nearest", vmin=lo, vmax=hi)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="log1p normalised")
    _scale_bar(ax, scale_bar_um, (x0, x1, y1, y0))
    ax.set_title(title if title is not None else f"{section_name(sdata, image_key)} · {gene} (predicted)")
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    return _finish(fig, ax, show, return_fig, save, f"expression_map_{gene}")


def _table_mpp(sdata: SpatialData, table) -> tuple[float, str]:
    """µm per unit of a table's ``obsm["spatial"]`` (its shapes' pixel size), or ``(1, "px")`` when unknown."""
    region = table.uns.get("spatialdata_attrs", {}).get("region")
    region = region[0] if isinstance(region, list) and len(region) == 1 else region
    if isinstance(region, str) and region in sdata.shapes:
        from spatialdata.transformations import get_transformation

        from .._core._mpp import _isotropic_scale, is_micron_cs

        for cs, t in get_transformation(sdata.shapes[region], get_all=True).items():
            if is_micron_cs(cs):
                try:
                    return _isotropic_scale(t, f"Shapes {region!r}"), "µm"
                except ValueError:
                    break
    return 1.0, "px"


def compare(
    sdata: SpatialData,
    gene: str,
    *,
    pred: str,
    truth: str,
    model=None,
    layer: str | None = None,
    cmap: str = "viridis",
    vmin: float | str | None = ROBUST_LIMITS[0],
    vmax: float | str | None = ROBUST_LIMITS[1],
    size: float | None = None,
    ax: Sequence[Axes] | None = None,
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
    return_fig: bool = False,
):
    """Measured vs predicted expression of one gene, side by side on the same footprints and colour scale.

    The measured counts are normalised with the model's recipe, as in :func:`stpredict.tl.evaluate`.

    Parameters
    ----------
    sdata
        The SpatialData object.
    gene
        Gene to draw.
    pred, truth
        Prediction and measured tables annotating the same shapes (joined by instance id).
    model
        The PixNet (default: the recipe stored in ``pred``).
    layer
        Layer of ``truth`` with the counts.
    cmap
        Colour map shared by both panels.
    vmin, vmax
        The shared colour limits: numbers, percentiles of both panels' values (``"p1"``/``"p99"``, the default) or
        ``None`` (minimum and maximum).
    size
        Marker size (default from the number of footprints).
    ax
        Two axes to draw the measured and the predicted panel into (default: a new figure).
    show, save, return_fig
        As in :func:`expression_map`.

    Returns
    -------
    The two axes (or the figure).

    """
    pt, tt = sdata.tables[pred], sdata.tables[truth]
    recipe = recipe_from_table(pt, model)
    if gene not in recipe.genes:
        raise KeyError(f"Gene {gene!r} is not predicted by the model.")
    pi, ti = match_rows(pt, tt, pred, truth)
    p = np.asarray(pt[:, gene].X).ravel()[pi]
    t = normalize_counts(tt, recipe, layer=layer)[ti, recipe.genes.index(gene)]
    xy = np.asarray(tt.obsm[C.SPATIAL_KEY], dtype=float)[ti]
    umpp, unit = _table_mpp(sdata, tt)
    xy = xy * umpp
    lo, hi = _limits(np.concatenate([p, t]), vmin, vmax)
    if ax is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True, layout="constrained")
    else:
        axes = list(ax)
        if len(axes) != 2:
            raise ValueError(f"ax must be two axes (measured, predicted), got {len(axes)}.")
        fig = axes[0].figure
    s = size or max(2.0, 4000 / max(len(p), 1))
    r = np.corrcoef(p, t)[0, 1] if np.std(p) > 0 and np.std(t) > 0 else np.nan
    for a, v, title in ((axes[0], t, f"measured {gene}"), (axes[1], p, f"predicted {gene} (PCC {r:.2f})")):
        sc_ = a.scatter(xy[:, 0], xy[:, 1], c=v, s=s, cmap=cmap, vmin=lo, vmax=hi, marker="s")
        a.set_title(title)
        a.set_aspect("equal")
        a.invert_yaxis() if not a.yaxis_inverted() else None
        a.set_xlabel(f"x ({unit})")
    axes[0].set_ylabel(f"y ({unit})")
    fig.colorbar(sc_, ax=list(axes), fraction=0.03, shrink=0.85, label="log1p normalised")
    return _finish(fig, axes, show, return_fig, save, f"compare_{gene}")


def gene_scores(
    result: pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame],
    *,
    section: str | None = None,
    bins: int = 30,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
    return_fig: bool = False,
):
    """Histogram of per-gene PCC with PCC@F (first quartile), PCC@S (median) and PCC@M (mean) marked.

    Parameters
    ----------
    result
        The per-gene DataFrame of :func:`stpredict.tl.evaluate` (or its whole return value).
    section
        Which section to draw (default: ``"pooled"`` when present, else the first).
    bins
        Histogram bins.
    ax, show, save, return_fig
        As in :func:`expression_map`.

    Returns
    -------
    The axes (or the figure).

    """
    per_gene = result[0] if isinstance(result, tuple) else result
    sections = list(dict.fromkeys(per_gene["section"]))
    section = section or ("pooled" if "pooled" in sections else sections[0])
    pcc = per_gene.loc[per_gene["section"] == section, "pcc"].to_numpy(float)
    ok = pcc[np.isfinite(pcc)]
    summ = summarize_pcc(pcc)
    fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained") if ax is None else (ax.figure, ax)
    ax.hist(ok, bins=bins, color="0.7")
    # three styles, widest first, so a line that coincides with another (PCC@S ≈ PCC@M) still shows
    styles = (("tab:blue", "-", 3.0), ("tab:orange", "--", 2.2), ("tab:red", ":", 2.2))
    for (name, v), (color, ls, lw) in zip(summ.items(), styles, strict=True):
        ax.axvline(v, color=color, ls=ls, lw=lw, label=f"{name} = {v:.3f}")
    ax.set_xlabel("per-gene PCC")
    ax.set_ylabel("genes")
    ax.set_title(
        f"{section}: {len(ok)} genes" + (f" ({len(pcc) - len(ok)} constant)" if len(pcc) > len(ok) else "")
    )
    ax.legend(fontsize=8)
    return _finish(fig, ax, show, return_fig, save, f"gene_scores_{section}")
