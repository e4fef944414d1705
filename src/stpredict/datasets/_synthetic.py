"""A synthetic H&E slide with known dense gene expression.

The generative model, in the order it runs:

1. a tissue mask (a noisy ellipse) and spatial *domains* (argmax of smooth random fields,
   patches of a few hundred µm) on a 2 µm grid;
2. cells on a jittered lattice inside the tissue; each cell's type is drawn from its domain's
   composition plus a fine random field (nests of ~20–40 µm, finer than a 55 µm spot);
3. the H&E-like image: eosin-pink stroma, per-type cytoplasm and nuclei (6–12 µm, per-type
   colour, elongation and chromatin texture) on a near-white background;
4. the true expression field (expected UMIs per 2 µm bin, genes × y × x): each 2 µm bin inside a
   cell's territory carries that cell type's profile, stroma carries a low ambient profile,
   background carries nothing — so expression is a function of what the image shows;
5. measured counts: Poisson draws per 2 µm bin, summed exactly into 8/16 µm bins (as Space
   Ranger bins Visium HD) and over the 2 µm bins whose centres fall inside legacy ST (100 µm,
   200 µm pitch) and Visium (55 µm, 100 µm hexagonal pitch) spots.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy import sparse
from scipy.ndimage import gaussian_filter, map_coordinates
from scipy.spatial import cKDTree
from spatialdata import SpatialData
from spatialdata.models import Image2DModel, Labels2DModel, PointsModel, ShapesModel, TableModel

from .. import _constants as C
from .._core._image import parse_rgb_image
from .._core._mpp import pixel_and_micron_transforms
from .._logging import logger
from .._settings import settings

__all__ = ["synthetic"]

# name, nucleus radius (µm), elongation, nucleus RGB, chromatin texture, cytoplasm RGB,
# cytoplasm radius / nucleus radius, relative RNA content
_CELL_TYPES = [
    ("tumour", 5.5, 1.2, (92, 52, 128), 45.0, (206, 128, 178), 1.7, 1.6),
    ("lymphocyte", 3.0, 1.0, (40, 22, 84), 8.0, (170, 110, 170), 1.25, 0.6),
    ("fibroblast", 3.5, 2.6, (88, 50, 122), 15.0, (236, 170, 204), 1.5, 0.8),
    ("epithelial", 4.5, 1.1, (122, 72, 152), 25.0, (196, 116, 170), 1.8, 1.1),
]
_BACKGROUND_RGB = (242, 240, 244)
_STROMA_RGB = (232, 172, 204)
_CELL_SPACING_UM = 13.0


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    f = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-12)


def _sample(field: np.ndarray, step_um: float, y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
    """Bilinear sample of a field defined on a grid of ``step_um`` at positions in µm."""
    coords = np.stack([np.ravel(y_um) / step_um, np.ravel(x_um) / step_um])
    return map_coordinates(field, coords, order=1, mode="nearest").reshape(np.shape(y_um))


def _cell_types(n: int, rng: np.random.Generator) -> list[tuple]:
    types = list(_CELL_TYPES[:n])
    for k in range(len(types), n):
        types.append(
            (
                f"type{k}",
                float(rng.uniform(3, 6)),
                float(rng.uniform(1, 2.5)),
                tuple(int(v) for v in rng.integers(30, 140, 3)),
                float(rng.uniform(5, 45)),
                tuple(int(v) for v in rng.integers(150, 240, 3)),
                float(rng.uniform(1.2, 1.9)),
                float(rng.uniform(0.6, 1.6)),
            )
        )
    return types


def _profiles(
    n_types: int, n_genes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-type expression shares (rows sum to 1), ambient share, and each gene's marker type."""
    base = np.exp(-np.linspace(0, 4, n_genes))  # gene means spread over ~2 orders of magnitude
    logfold = rng.normal(0, 0.6, (n_types, n_genes))
    marker_of = ["" for _ in range(n_genes)]
    n_markers = max(1, n_genes // (4 * n_types))
    genes = rng.permutation(n_genes)
    for t in range(n_types):
        for g in genes[t * n_markers : (t + 1) * n_markers]:
            logfold[t, g] += 2.5
            marker_of[g] = str(t)
    prof = base[None, :] * np.exp(logfold)
    prof /= prof.sum(1, keepdims=True)
    ambient = base / base.sum()
    return prof, ambient, marker_of


def _squares(x0: np.ndarray, y0: np.ndarray, side: float):
    return gpd.GeoDataFrame(geometry=shapely.box(x0, y0, x0 + side, y0 + side))


def synthetic(
    *,
    width_um: float = 1200.0,
    height_um: float = 1008.0,
    mpp: float = 0.5,
    n_genes: int = 50,
    n_cell_types: int = 4,
    n_domains: int = 4,
    bins_um: Sequence[int] = C.VISIUM_HD_BINS_UM,
    st_spots: bool = True,
    visium_spots: bool = True,
    umi_per_bin: float = 1.5,
    dataset_id: str = "synthetic",
    seed: int | None = None,
) -> SpatialData:
    """A synthetic H&E slide with known true dense expression and simulated measurements.

    Parameters
    ----------
    width_um, height_um
        Slide size in µm; rounded to a multiple of the largest bin size (16 µm by default).
    mpp
        Image pixel size in µm; must divide 2 µm exactly (e.g. 0.25, 0.5, 1, 2) so 2 µm bins fall
        on whole pixels.
    n_genes
        Number of genes. Each cell type has a few strong marker genes (``var["marker_of"]``).
    n_cell_types
        Number of cell types (the first four are tumour, lymphocyte, fibroblast, epithelial).
    n_domains
        Number of spatial domains (regions with distinct cell-type composition).
    bins_um
        Visium HD-like square bin sizes in µm (multiples of 2).
    st_spots, visium_spots
        Whether to simulate legacy ST spots (100 µm, 200 µm pitch) and Visium spots (55 µm,
        100 µm hexagonal pitch).
    umi_per_bin
        Mean UMIs per 2 µm bin of an average cell (sets the sequencing depth).
    dataset_id
        Prefix of element names and name of the pixel coordinate system (microns: ``"{dataset_id}_um"``).
    seed
        Random seed; default :attr:`stpredict.settings.seed`. The same seed gives the same slide.

    Returns
    -------
    A SpatialData object (``p = dataset_id + "_"``) with

    - ``images[p + "full_image"]``: the H&E-like RGB image at ``mpp``;
    - ``images[p + "truth"]``: true expected UMIs per 2 µm bin, ``(c=genes, y, x)`` float32;
    - ``labels[p + "domains"]``: domain label per 2 µm bin (0 = background);
    - ``points[p + "cells"]``: cell centres with ``cell_type`` and ``domain``;
    - for each bin size ``b``: ``shapes[p + "square_00bum"]`` and ``tables["square_00bum"]``;
    - ``shapes[p + "st_spots"]`` / ``tables["st_spots"]`` and ``shapes[p + "visium_spots"]`` /
      ``tables["visium_spots"]``.

    Every table has raw counts in ``X`` (sparse int32), the exact expected counts of the same
    footprint in ``layers["expected"]``, ``obs["domain"]`` (majority domain), ``array_row`` /
    ``array_col``, ``obsm["spatial"]`` (centres in image pixels) and the ``region`` /
    ``instance_id`` link to its shapes. ``sdata.attrs["stpredict"]`` records the parameters and
    cell types. Shapes are in image pixels (coordinate system ``dataset_id``) and microns.

    Examples
    --------
    Train on the simulated 100 µm spots and score the 8 µm bins against the true expression::

        syn = stp.datasets.synthetic(seed=0)
        model = stp.tl.train(syn, tables="st_spots", n_top_genes=50)
        stp.tl.predict_dense(syn, model, shapes=["synthetic_square_008um"])
        stp.tl.evaluate(syn, pred="pixnet_synthetic_square_008um", truth="square_008um", layer="expected")

    """
    seed = settings.seed if seed is None else seed
    rng = np.random.default_rng(seed)
    px_per_2um = 2.0 / mpp
    if mpp <= 0 or abs(px_per_2um - round(px_per_2um)) > 1e-9:
        raise ValueError(f"mpp must divide 2 µm exactly (e.g. 0.25, 0.5, 1.0, 2.0), got {mpp!r}.")
    px_per_2um = round(px_per_2um)
    bins_um = sorted({int(b) for b in bins_um})
    if any(b % 2 or b < 2 for b in bins_um):
        raise ValueError(f"bins_um must be even numbers of µm (Visium HD: 2, 8, 16), got {bins_um}.")
    if n_genes < 1 or n_cell_types < 1 or n_domains < 1:
        raise ValueError("n_genes, n_cell_types and n_domains must be at least 1.")
    block = max([*bins_um, 2])
    w_um = max(block, round(width_um / block) * block)
    h_um = max(block, round(height_um / block) * block)
    if (w_um, h_um) != (width_um, height_um):
        logger.info(f"Synthetic slide size rounded to {w_um} x {h_um} µm (a multiple of {block} µm).")
    nx2, ny2 = w_um // 2, h_um // 2  # 2 µm grid
    width_px, height_px = nx2 * px_per_2um, ny2 * px_per_2um
    types = _cell_types(n_cell_types, rng)

    # -- 1. tissue and domains (smooth fields on a 16 µm grid) -----------------------------
    step = 16.0
    gshape = (int(np.ceil(h_um / step)) + 2, int(np.ceil(w_um / step)) + 2)
    tissue_noise = _smooth_field(rng, gshape, 4)
    domain_fields = [_smooth_field(rng, gshape, 6) for _ in range(n_domains)]
    type_fields = [_smooth_field(rng, (gshape[0] * 4, gshape[1] * 4), 3) for _ in range(n_cell_types)]

    def tissue_at(y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
        r = ((x_um - w_um / 2) / (0.46 * w_um)) ** 2 + ((y_um - h_um / 2) / (0.44 * h_um)) ** 2
        return np.sqrt(r) + 0.12 * _sample(tissue_noise, step, y_um, x_um) < 1.0

    def domain_at(y_um: np.ndarray, x_um: np.ndarray) -> np.ndarray:
        return np.argmax(np.stack([_sample(f, step, y_um, x_um) for f in domain_fields]), axis=0)

    yc2, xc2 = np.meshgrid((np.arange(ny2) + 0.5) * 2.0, (np.arange(nx2) + 0.5) * 2.0, indexing="ij")
    tissue2 = tissue_at(yc2, xc2)
    domain2 = np.where(tissue2, domain_at(yc2, xc2) + 1, 0).astype(np.int32)

    # -- 2. cells ----------------------------------------------------------------------------
    gy, gx = np.meshgrid(
        np.arange(_CELL_SPACING_UM / 2, h_um, _CELL_SPACING_UM),
        np.arange(_CELL_SPACING_UM / 2, w_um, _CELL_SPACING_UM),
        indexing="ij",
    )
    cy = gy.ravel() + rng.uniform(-0.3, 0.3, gy.size) * _CELL_SPACING_UM
    cx = gx.ravel() + rng.uniform(-0.3, 0.3, gx.size) * _CELL_SPACING_UM
    inside = (cy > 0) & (cy < h_um) & (cx > 0) & (cx < w_um)
    cy, cx = cy[inside], cx[inside]
    keep = tissue_at(cy, cx)
    cy, cx = cy[keep], cx[keep]
    if cy.size == 0:
        raise ValueError("The synthetic slide is too small to hold any cell; increase width_um/height_um.")
    cell_domain = domain_at(cy, cx)
    composition = np.log(rng.dirichlet(np.full(n_cell_types, 0.7), n_domains) + 1e-3)
    fine = np.stack([_sample(f, step / 4, cy, cx) for f in type_fields], axis=1)
    cell_type = np.argmax(composition[cell_domain] + 1.2 * fine, axis=1)
    n_cells = cy.size
    angle = rng.uniform(0, np.pi, n_cells)
    r_nuc = np.array([t[1] for t in types])[cell_type] * rng.uniform(0.85, 1.15, n_cells)
    elong = np.array([t[2] for t in types])[cell_type]
    r_cyto = np.array([t[6] for t in types])[cell_type] * r_nuc
    tree = cKDTree(np.c_[cy, cx])

    # -- 3. the image ------------------------------------------------------------------------
    img = np.empty((height_px, width_px, 3), dtype=np.float32)
    tex = _smooth_field(rng, (height_px, width_px), 1.2 / mpp).astype(np.float32)
    fib = _smooth_field(rng, (height_px // 4 + 1, width_px // 4 + 1), (0.5, 3.0)).astype(np.float32)
    nuc_rgb = np.array([t[3] for t in types], np.float32)
    nuc_tex = np.array([t[4] for t in types], np.float32)
    cyto_rgb = np.array([t[5] for t in types], np.float32)
    rows_per_chunk = max(1, 2_000_000 // width_px)
    xs_um = (np.arange(width_px) + 0.5) * mpp
    for r0 in range(0, height_px, rows_per_chunk):
        r1 = min(height_px, r0 + rows_per_chunk)
        py, px = np.meshgrid((np.arange(r0, r1) + 0.5) * mpp, xs_um, indexing="ij")
        dist, idx = tree.query(np.c_[py.ravel(), px.ravel()], workers=-1)
        dist, idx = dist.reshape(py.shape), idx.reshape(py.shape)
        dy, dx = py - cy[idx], px - cx[idx]
        ca, sa = np.cos(angle[idx]), np.sin(angle[idx])
        a = r_nuc[idx] * np.sqrt(elong[idx])
        b = r_nuc[idx] / np.sqrt(elong[idx])
        in_nuc = ((dx * ca + dy * sa) / a) ** 2 + ((-dx * sa + dy * ca) / b) ** 2 <= 1.0
        in_cyto = dist <= r_cyto[idx]
        in_tissue = tissue_at(py, px)
        t = tex[r0:r1]
        chunk = np.empty((*py.shape, 3), np.float32)
        chunk[:] = np.asarray(_BACKGROUND_RGB, np.float32)
        stroma = (
            np.asarray(_STROMA_RGB, np.float32)
            + 14.0 * fib[(np.arange(r0, r1) // 4)][:, np.arange(width_px) // 4, None]
        )
        chunk = np.where(in_tissue[..., None], stroma, chunk)
        ty = cell_type[idx]
        chunk = np.where((in_tissue & in_cyto)[..., None], 0.35 * chunk + 0.65 * cyto_rgb[ty], chunk)
        nucleus = nuc_rgb[ty] + (nuc_tex[ty] * t)[..., None]
        chunk = np.where((in_tissue & in_nuc)[..., None], nucleus, chunk)
        img[r0:r1] = chunk + 3.0 * t[..., None]
    img = gaussian_filter(img, sigma=(0.6, 0.6, 0))
    img += rng.normal(0, 2.0, img.shape).astype(np.float32)
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)
    del img, tex

    # -- 4. true expression on the 2 µm grid -------------------------------------------------
    prof, ambient, marker_of = _profiles(n_cell_types, n_genes, rng)
    rna = np.array([t[7] for t in types])
    dist2, idx2 = tree.query(np.c_[yc2.ravel(), xc2.ravel()], workers=-1)
    dist2, idx2 = dist2.reshape(yc2.shape), idx2.reshape(yc2.shape)
    in_cell = tissue2 & (dist2 <= r_cyto[idx2] + 1.0)
    ty2 = cell_type[idx2]
    total = np.where(in_cell, umi_per_bin * rna[ty2], np.where(tissue2, 0.15 * umi_per_bin, 0.0))
    share = np.where(in_cell[..., None], prof[ty2], ambient[None, None, :])
    truth = (total[..., None] * share).astype(np.float32)  # (y, x, genes)

    # -- 5. measured counts ------------------------------------------------------------------
    counts2 = rng.poisson(truth).astype(np.int32)
    gene_names = [f"G{g:03d}" for g in range(n_genes)]
    type_names = [t[0] for t in types]
    var = pd.DataFrame(
        {"marker_of": pd.Categorical([type_names[int(m)] if m else "none" for m in marker_of])},
        index=pd.Index(gene_names, name="gene"),
    )
    px_tf = pixel_and_micron_transforms(dataset_id, mpp=mpp)
    prefix = f"{dataset_id}_"
    shapes, tables = {}, {}
    domain_names = [f"domain{d}" for d in range(1, n_domains + 1)]

    def majority_domain(member: sparse.csr_matrix) -> pd.Categorical:
        onehot = sparse.csr_matrix(
            (np.ones(domain2.size), (np.arange(domain2.size), domain2.ravel())),
            shape=(domain2.size, n_domains + 1),
        )
        votes = (member @ onehot).toarray()[:, 1:]
        return pd.Categorical(np.asarray(domain_names)[votes.argmax(1)], categories=domain_names)

    def make_table(name, X, expected, obs, centres_px, geoms):
        key = prefix + name
        obs = obs.copy()
        obs[C.REGION_KEY] = pd.Categorical([key] * len(obs))
        obs[C.INSTANCE_KEY] = np.arange(len(obs))
        adata = ad.AnnData(X=sparse.csr_matrix(X, dtype=np.int32), obs=obs, var=var.copy())
        adata.layers[C.EXPECTED_LAYER] = np.asarray(expected, dtype=np.float32)
        adata.obsm[C.SPATIAL_KEY] = centres_px
        adata.uns[C.UNS_KEY] = {"mpp": mpp, "pixel_cs": dataset_id, "synthetic": True}
        shapes[key] = geoms
        tables[name] = TableModel.parse(
            adata, region=key, region_key=C.REGION_KEY, instance_key=C.INSTANCE_KEY
        )

    flat_counts = counts2.reshape(-1, n_genes)
    flat_truth = truth.reshape(-1, n_genes)
    for b in bins_um:
        k = b // 2
        nyb, nxb = ny2 // k, nx2 // k
        cb = counts2.reshape(nyb, k, nxb, k, n_genes).sum((1, 3))
        eb = truth.reshape(nyb, k, nxb, k, n_genes).sum((1, 3))
        tb = tissue2.reshape(nyb, k, nxb, k).any((1, 3))
        rows, cols = np.nonzero(tb)
        # membership of 2 µm bins for the majority domain
        lin2 = (np.arange(ny2)[:, None] // k * nxb + np.arange(nx2)[None, :] // k).ravel()
        sel = np.full(nyb * nxb, -1)
        sel[rows * nxb + cols] = np.arange(rows.size)
        m = sel[lin2] >= 0
        member = sparse.csr_matrix(
            (np.ones(m.sum()), (sel[lin2][m], np.nonzero(m)[0])), shape=(rows.size, ny2 * nx2)
        )
        side_px = b / mpp
        obs = pd.DataFrame(
            {"array_row": rows, "array_col": cols, "in_tissue": 1, C.DOMAIN_COL: majority_domain(member)},
            index=pd.Index(
                [f"s_{b:03d}um_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols, strict=True)], name="barcode"
            ),
        )
        centres = np.c_[(cols + 0.5) * side_px, (rows + 0.5) * side_px]
        geoms = ShapesModel.parse(_squares(cols * side_px, rows * side_px, side_px), transformations=px_tf)
        make_table(C.square_key(b), cb[rows, cols], eb[rows, cols], obs, centres, geoms)

    def spots(name, centres_um, diameter_um, array_rows, array_cols):
        r_um = diameter_um / 2
        ok = (
            (centres_um[:, 0] - r_um >= 0)
            & (centres_um[:, 0] + r_um <= w_um)
            & (centres_um[:, 1] - r_um >= 0)
            & (centres_um[:, 1] + r_um <= h_um)
        )
        ok &= tissue_at(centres_um[:, 1], centres_um[:, 0])
        centres_um, array_rows, array_cols = centres_um[ok], array_rows[ok], array_cols[ok]
        if len(centres_um) == 0:
            logger.warning(f"No {name} spot falls on the synthetic tissue; the slide is too small for them.")
            return
        # 2 µm bins whose centre lies inside each disk
        rows_i, cols_i = [], []
        for i, (sx, sy) in enumerate(centres_um):
            y0, y1 = int((sy - r_um) // 2), int(np.ceil((sy + r_um) / 2))
            x0, x1 = int((sx - r_um) // 2), int(np.ceil((sx + r_um) / 2))
            yy, xx = np.meshgrid(
                np.arange(max(0, y0), min(ny2, y1)), np.arange(max(0, x0), min(nx2, x1)), indexing="ij"
            )
            inside = ((xx + 0.5) * 2 - sx) ** 2 + ((yy + 0.5) * 2 - sy) ** 2 <= r_um**2
            lin = (yy * nx2 + xx)[inside]
            rows_i.append(np.full(lin.size, i))
            cols_i.append(lin)
        ri, ci = np.concatenate(rows_i), np.concatenate(cols_i)
        member = sparse.csr_matrix((np.ones(ri.size), (ri, ci)), shape=(len(centres_um), ny2 * nx2))
        obs = pd.DataFrame(
            {
                "array_row": array_rows,
                "array_col": array_cols,
                "in_tissue": 1,
                C.DOMAIN_COL: majority_domain(member),
            },
            index=pd.Index([f"{c}x{r}" for r, c in zip(array_rows, array_cols, strict=True)], name="spot_id"),
        )
        centres_px = centres_um / mpp
        geoms = ShapesModel.parse(
            centres_px, geometry=0, radius=np.full(len(centres_px), r_um / mpp), transformations=px_tf
        )
        make_table(name, member @ flat_counts, member @ flat_truth, obs, centres_px, geoms)

    if st_spots:
        p = C.ST_PITCH_UM
        xs = np.arange(p / 2, w_um, p)
        ys = np.arange(p / 2, h_um, p)
        jj, ii = np.meshgrid(np.arange(xs.size), np.arange(ys.size))
        spots(
            C.ST_SPOTS_KEY,
            np.c_[xs[jj.ravel()], ys[ii.ravel()]],
            C.ST_SPOT_DIAMETER_UM,
            ii.ravel(),
            jj.ravel(),
        )
    if visium_spots:
        p = C.VISIUM_PITCH_UM
        dy = p * np.sqrt(3) / 2
        rows = np.arange(int(h_um // dy) + 1)
        cols = np.arange(int(w_um // p) + 1)
        ii, jj = np.meshgrid(rows, cols, indexing="ij")
        ii, jj = ii.ravel(), jj.ravel()
        x = p / 2 + jj * p + (ii % 2) * p / 2
        y = p / 2 + ii * dy
        spots(C.VISIUM_SPOTS_KEY, np.c_[x, y], C.VISIUM_SPOT_DIAMETER_UM, ii, 2 * jj + ii % 2)

    he = parse_rgb_image(image, px_tf)
    truth_img = Image2DModel.parse(
        np.moveaxis(truth, -1, 0),
        dims=("c", "y", "x"),
        c_coords=gene_names,
        transformations=pixel_and_micron_transforms(dataset_id, mpp=mpp, pixel_scale=px_per_2um),
        chunks=(min(n_genes, 64), 1024, 1024),
    )
    labels = Labels2DModel.parse(
        domain2,
        dims=("y", "x"),
        transformations=pixel_and_micron_transforms(dataset_id, mpp=mpp, pixel_scale=px_per_2um),
    )
    cells = PointsModel.parse(
        pd.DataFrame(
            {
                "x": cx / mpp,
                "y": cy / mpp,
                "cell_type": pd.Categorical(np.asarray(type_names)[cell_type], categories=type_names),
                C.DOMAIN_COL: pd.Categorical(np.asarray(domain_names)[cell_domain], categories=domain_names),
            }
        ),
        transformations=px_tf,
    )
    sdata = SpatialData(
        images={prefix + "full_image": he, prefix + C.TRUTH_KEY: truth_img},
        labels={prefix + C.DOMAINS_KEY: labels},
        points={prefix + C.CELLS_KEY: cells},
        shapes=shapes,
        tables=tables,
    )
    sdata.attrs[C.UNS_KEY] = {
        "synthetic": {
            "width_um": float(w_um),
            "height_um": float(h_um),
            "mpp": float(mpp),
            "n_genes": int(n_genes),
            "cell_types": type_names,
            "domains": domain_names,
            "bins_um": [int(b) for b in bins_um],
            "umi_per_bin": float(umi_per_bin),
            "seed": int(seed),
            "truth_units": "expected UMIs per 2 µm bin",
        }
    }
    logger.info(
        f"Synthetic slide {w_um} x {h_um} µm ({width_px} x {height_px} px at {mpp} µm/px): {n_cells} cells, "
        f"{n_genes} genes, tables {sorted(tables)}."
    )
    return sdata
