"""``tl.evaluate``: prediction vs measurement with the field's metrics, per section and pooled."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
from skimage.metrics import structural_similarity
from spatialdata import SpatialData

from .. import _constants as C
from .._core import match_rows, normalize_counts, pcc_per_gene, recipe_from_table, summarize_pcc
from .._core import section_names as default_section_names
from .._core._validate import check_counts
from .._logging import logger

__all__ = ["evaluate", "pcc_per_gene", "raster", "ssim_per_gene", "summarize_pcc"]


def raster(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Place footprint values ``(n, g)`` on their lattice ``(g, rows, cols)``; empty lattice sites are 0."""
    rows = rows - rows.min()
    cols = cols - cols.min()
    out = np.zeros((values.shape[1], rows.max() + 1, cols.max() + 1), np.float64)
    out[:, rows, cols] = values.T
    return out


def ssim_per_gene(pred: np.ndarray, truth: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """SSIM of each gene's image on the footprint lattice (skimage, data range of the truth; NaN if too small)."""
    P, T = raster(pred, rows, cols), raster(truth, rows, cols)
    out = np.full(pred.shape[1], np.nan)
    if min(T.shape[1:]) < 7:
        return out
    for g in range(pred.shape[1]):
        rng = float(T[g].max() - T[g].min())
        if rng > 0:
            out[g] = structural_similarity(T[g], P[g], data_range=rng)
    return out


def _leiden(X: np.ndarray, resolution: float, seed: int, n_neighbors: int) -> np.ndarray:
    import scanpy as sc  # heavy: loaded when clusters are compared

    a = ad.AnnData(np.asarray(X, dtype=np.float32))
    n_comps = min(30, a.n_obs - 1, a.n_vars - 1)
    if n_comps >= 2:
        sc.pp.pca(a, n_comps=n_comps, random_state=seed)
        rep = "X_pca"
    else:
        rep = "X"
    # exact kNN (scikit-learn): pynndescent's numba compilation alone costs about a minute per process on 2 cores
    sc.pp.neighbors(
        a, n_neighbors=min(n_neighbors, a.n_obs - 1), use_rep=rep, random_state=seed, transformer="sklearn"
    )
    sc.tl.leiden(a, resolution=resolution, random_state=seed, flavor="igraph", n_iterations=2)
    return a.obs["leiden"].to_numpy()


def _section_data(
    sdata: SpatialData, pred: str, truth: str, model, layer: str | None, domain_key: str | None
):
    if pred not in sdata.tables:
        raise KeyError(f"Prediction table {pred!r} not found; tables: {list(sdata.tables)}.")
    if truth not in sdata.tables:
        raise KeyError(f"Truth table {truth!r} not found; tables: {list(sdata.tables)}.")
    pt, tt = sdata.tables[pred], sdata.tables[truth]
    if layer is not None and layer not in tt.layers:
        raise KeyError(f"Layer {layer!r} not in truth table {truth!r}; its layers: {list(tt.layers)}.")
    if domain_key is not None and domain_key not in tt.obs:
        raise KeyError(
            f"`domain_key` {domain_key!r} is not a column of {truth!r}.obs ({list(tt.obs.columns)})."
        )
    check_counts(
        tt.layers[layer] if layer is not None else tt.X,
        f"Truth table {truth!r}" + (f" (layer {layer!r})" if layer is not None else ""),
        integer=layer is None,
    )
    recipe = recipe_from_table(pt, model)
    genes = [g for g in recipe.genes if g in pt.var_names]
    if len(genes) < len(recipe.genes):
        raise ValueError(
            f"Prediction table {pred!r} lacks {len(recipe.genes) - len(genes)} of the model's genes."
        )
    pi, ti = match_rows(pt, tt, pred, truth)
    P = np.asarray(
        pt[:, genes].X if not hasattr(pt.X, "compute") else pt[:, genes].X.compute(), dtype=np.float64
    )[pi]
    T = normalize_counts(tt, recipe, layer=layer)[ti].astype(np.float64)
    ok = np.isfinite(P).all(1)
    if not ok.any():
        raise ValueError(
            f"No footprint of {pred!r} has a finite prediction (all NaN): its shapes lie off the image, or the "
            "prediction failed. Check that the shapes and the image share a coordinate system and overlap."
        )
    if not ok.all():
        logger.warning(f"{int((~ok).sum())} footprint(s) of {pred!r} have no finite prediction; skipped.")
    lattice = None
    if {"array_row", "array_col"} <= set(tt.obs.columns):
        lattice = (
            tt.obs["array_row"].to_numpy()[ti][ok].astype(int),
            tt.obs["array_col"].to_numpy()[ti][ok].astype(int),
        )
    domains = tt.obs[domain_key].to_numpy()[ti][ok] if domain_key else None
    return P[ok], T[ok], genes, lattice, domains


def _metrics(
    P, T, lattice, domains, *, ssim: bool, ari: bool, resolution: float, seed: int, n_neighbors: int
):
    from sklearn.metrics import adjusted_rand_score  # heavy: loaded when metrics are computed

    pcc = pcc_per_gene(P, T)
    err = P - T
    per_gene = {
        "pcc": pcc,
        "constant": ~np.isfinite(pcc),
        "mse": (err**2).mean(0),
        "mae": np.abs(err).mean(0),
        "rmse": np.sqrt((err**2).mean(0)),
    }
    if ssim and lattice is not None:
        per_gene["ssim"] = ssim_per_gene(P, T, *lattice)
    summary = {"n_footprints": len(P), **summarize_pcc(pcc)}
    summary.update(
        {
            "MSE": float((err**2).mean()),
            "MAE": float(np.abs(err).mean()),
            "RMSE": float(np.sqrt((err**2).mean())),
        }
    )
    if "ssim" in per_gene:
        summary["SSIM"] = (
            float(np.nanmean(per_gene["ssim"])) if np.isfinite(per_gene["ssim"]).any() else np.nan
        )
    if ari and len(P) >= 10:
        lp = _leiden(P, resolution, seed, n_neighbors)
        lt = _leiden(T, resolution, seed, n_neighbors)
        summary["ARI_pred_vs_truth"] = float(adjusted_rand_score(lt, lp))
        if domains is not None:
            summary["ARI_pred_vs_domains"] = float(adjusted_rand_score(domains, lp))
            summary["ARI_truth_vs_domains"] = float(adjusted_rand_score(domains, lt))
    summary["n_constant_genes"] = int(per_gene["constant"].sum())
    return per_gene, summary


def evaluate(
    sdata: SpatialData | Sequence[SpatialData],
    *,
    pred: str,
    truth: str,
    model=None,
    layer: str | None = None,
    ssim: bool = True,
    ari: bool = True,
    leiden_resolution: float = 1.0,
    n_neighbors: int = 15,
    domain_key: str | None = None,
    seed: int = 0,
    section_names: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compare predicted with measured expression on the same footprints, with the field's metrics.

    The measured counts are normalised with the model's recipe (total → ``target_sum``, log1p, on the
    model's genes) so both sides are on the scale the model predicts.

    Parameters
    ----------
    sdata
        One SpatialData, or one per section.
    pred
        Prediction table (e.g. ``"pixnet_C5_spots"`` from ``tl.predict_dense(..., shapes=["C5_spots"])``).
    truth
        Measured count table annotating the same shapes element; rows are joined by shapes instance id.
    model
        The PixNet; default: the recipe recorded in ``pred.uns["stpredict"]``.
    layer
        Layer of ``truth`` with the counts (default ``X``; ``"expected"`` for the synthetic slide's truth).
    ssim
        SSIM per gene (skimage) on each section's footprint lattice (``array_row``/``array_col``).
    ari
        Adjusted Rand index between Leiden clusterings of predicted and measured expression
        (``sc.pp.pca`` → ``sc.pp.neighbors`` with exact scikit-learn neighbours → ``sc.tl.leiden``) and, with
        ``domain_key``, against
        those labels.
    leiden_resolution
        Leiden resolution, the same for both clusterings.
    n_neighbors
        Neighbours of the kNN graph.
    seed
        Random state of PCA, neighbours and Leiden.
    domain_key
        Column of the truth table's ``obs`` with domain labels.
    section_names
        Names for the sections (default: the ``dataset_id`` each reader gave its section, e.g. ``"C5"``, made
        unique; ``"section"`` when a section has no image).

    Returns
    -------
    ``(per_gene, summary)``: a tidy per-gene DataFrame (``section``, ``gene``, ``pcc``, ``constant``
    (PCC undefined), ``mse``, ``mae``, ``rmse``, ``ssim``) and a summary with one row per section plus
    ``"pooled"`` (all footprints together; not the mean of sections) and columns ``PCC@F``, ``PCC@S``,
    ``PCC@M``, ``MSE``, ``MAE``, ``RMSE``, ``SSIM``, ``ARI_*``. The summary is also stored in each
    prediction table's ``uns["stpredict"]["evaluation"]``.

    Examples
    --------
    Score a prediction on measured spots, or on the synthetic slide's true expression::

        per_gene, summary = stp.tl.evaluate(sdata, pred="pixnet_C5_spots", truth="spots")
        summary.loc["C5", ["PCC@F", "PCC@S", "PCC@M", "SSIM", "ARI_pred_vs_truth"]]
        stp.pl.gene_scores(per_gene)

        stp.tl.evaluate(syn, pred="pixnet_synthetic_square_008um", truth="square_008um", layer="expected")

    """
    sdatas = list(sdata) if isinstance(sdata, list | tuple) else [sdata]
    names = list(section_names) if section_names is not None else default_section_names(sdatas)
    if len(names) != len(sdatas):
        raise ValueError(f"Got {len(names)} section names for {len(sdatas)} sections.")
    kw = {"ssim": ssim, "ari": ari, "resolution": leiden_resolution, "seed": seed, "n_neighbors": n_neighbors}
    rows, per_gene_frames, pooled = [], [], []
    genes = None
    for name, s in zip(names, sdatas, strict=True):
        P, T, genes, lattice, domains = _section_data(s, pred, truth, model, layer, domain_key)
        pg, summ = _metrics(P, T, lattice, domains, **kw)
        per_gene_frames.append(pd.DataFrame({"section": name, "gene": genes, **pg}))
        rows.append({"section": name, **summ})
        pooled.append((P, T, domains))
    if len(sdatas) > 1:
        P = np.vstack([p for p, _, _ in pooled])
        T = np.vstack([t for _, t, _ in pooled])
        doms = None if any(d is None for _, _, d in pooled) else np.concatenate([d for _, _, d in pooled])
        pg, summ = _metrics(P, T, None, doms, **kw)
        per_gene_frames.append(pd.DataFrame({"section": "pooled", "gene": genes, **pg}))
        rows.append({"section": "pooled", **summ})
    per_gene = pd.concat(per_gene_frames, ignore_index=True)
    summary = pd.DataFrame(rows).set_index("section")
    for s in sdatas:
        rec = dict(s.tables[pred].uns.get(C.UNS_KEY, {}))
        rec["evaluation"] = {
            "truth": truth,
            **{
                k: {c: (None if pd.isna(v) else v) for c, v in r.items()}
                for k, r in summary.to_dict(orient="index").items()
            },
        }
        s.tables[pred].uns[C.UNS_KEY] = rec
    return per_gene, summary
