from __future__ import annotations

import numpy as np
import pytest
import shapely

from stpredict._core import Footprints, covered, footprint_matrix


def _brute(fp: Footprints, shape, how="mean", inside_only=True):
    """Reference: loop over every footprint and pixel, test the pixel centre."""
    h, w = shape
    rows, kept = [], []
    for i in range(len(fp)):
        b = fp.subset(np.array([i])).bounds()[0]
        if inside_only and not (b[0] >= 0 and b[1] >= 0 and b[2] <= w and b[3] <= h):
            continue
        m = np.zeros(h * w)
        for r in range(h):
            for c in range(w):
                x, y = c + 0.5, r + 0.5
                if fp.is_disk:
                    ok = (x - fp.centres[i, 0]) ** 2 + (y - fp.centres[i, 1]) ** 2 <= fp.radii[i] ** 2
                else:
                    ok = fp.geometries[i].contains(shapely.Point(x, y))
                m[r * w + c] = ok
        cx, cy = fp.centres[i]
        if m.sum() == 0 and 0 <= cx < w and 0 <= cy < h:
            m[int(cy) * w + int(cx)] = 1
        rows.append(m / max(m.sum(), 1e-12) if how == "mean" else m)
        kept.append(i)
    return np.array(rows).reshape(len(rows), h * w), np.array(kept, dtype=int)


def _random_footprints(rng, shape, n=25):
    h, w = shape
    c = np.c_[rng.uniform(-3, w + 3, n), rng.uniform(-3, h + 3, n)]
    disks = Footprints(c, radii=rng.uniform(0.3, 6, n))
    polys = []
    for (x, y), ang, side in zip(c, rng.uniform(0, 90, n), rng.uniform(0.5, 9, n), strict=True):
        sq = shapely.box(x - side / 2, y - side / 2, x + side / 2, y + side / 2)
        polys.append(shapely.affinity.rotate(sq, ang, origin=(x, y)))
    polys[0] = shapely.Polygon([(2, 2), (12, 3), (7, 11), (5, 6)])  # a general (cell-like) polygon
    c[0] = np.array(polys[0].centroid.coords[0])
    return disks, Footprints(c, geometries=np.array(polys, dtype=object))


@pytest.mark.parametrize("kind", ["disk", "polygon"])
@pytest.mark.parametrize("how", ["mean", "sum"])
def test_matches_brute_force_including_tile_edges(kind, how):
    rng = np.random.default_rng(0)
    shape = (17, 23)
    disks, polys = _random_footprints(rng, shape)
    fp = disks if kind == "disk" else polys
    A, kept = footprint_matrix(fp, shape, how=how)
    ref, ref_kept = _brute(fp, shape, how=how)
    np.testing.assert_array_equal(kept, ref_kept)
    assert 0 < len(kept) < len(fp)  # some footprints were cut by the edge and excluded
    np.testing.assert_allclose(A.toarray(), ref, atol=1e-12)
    # without the inside rule every footprint gets a row, clipped to the map
    A_all, kept_all = footprint_matrix(fp, shape, how="sum", require_inside=False)
    assert len(kept_all) == len(fp)
    ref_all, _ = _brute(fp, shape, how="sum", inside_only=False)
    np.testing.assert_allclose(A_all.toarray(), ref_all)


def test_fractional_coverage_approximates_area():
    fp = Footprints(np.array([[10.0, 10.0]]), radii=np.array([5.0]))
    A, _ = footprint_matrix(fp, (20, 20), how="sum", coverage="fraction", supersample=8)
    assert A.sum() == pytest.approx(np.pi * 25, rel=0.02)
    sq = Footprints(
        np.array([[5.0, 5.0]]), geometries=np.array([shapely.box(2.25, 2.5, 7.75, 7.5)], dtype=object)
    )
    A, _ = footprint_matrix(sq, (10, 10), how="sum", coverage="fraction", supersample=4)
    assert A.sum() == pytest.approx(5.5 * 5.0)


def test_bad_arguments():
    fp = Footprints(np.zeros((1, 2)), radii=np.ones(1))
    with pytest.raises(ValueError, match="how"):
        footprint_matrix(fp, (4, 4), how="median")
    with pytest.raises(ValueError, match="coverage"):
        footprint_matrix(fp, (4, 4), coverage="area")
    with pytest.raises(ValueError, match="either"):
        Footprints(np.zeros((1, 2)))


@pytest.mark.parametrize("kind", ["disk", "polygon"])
def test_covered_matches_brute_force(kind):
    """The one points-in-shapes check (tiles in training and in predict_dense) against a loop."""
    rng = np.random.default_rng(3)
    disks, polys = _random_footprints(rng, (19, 21))
    fp = disks if kind == "disk" else polys
    pts = rng.uniform(-5, 25, (3000, 2))
    if kind == "disk":
        d2 = ((pts[:, None, :] - fp.centres[None]) ** 2).sum(-1)
        brute = (d2 <= fp.radii[None] ** 2).any(1)
    else:
        brute = np.array([[g.contains(shapely.Point(*p)) for g in fp.geometries] for p in pts]).any(1)
    inside = covered(fp, pts[:, 0], pts[:, 1])
    np.testing.assert_array_equal(inside, brute)
    assert 0 < inside.sum() < len(pts)
    assert not covered(fp.subset(np.array([], int)), pts[:, 0], pts[:, 1]).any()


def _grid_and_polygons(rng, n=40, angle_deg=7.0, side=3.3):
    """The same rotated square bins as grid cells (centre + edges) and as shapely polygons."""
    t = np.deg2rad(angle_deg)
    edges = side * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    ij = rng.choice(64, n, replace=False)
    centres = np.c_[ij % 8, ij // 8] @ edges.T + np.array([1.7, 2.1])
    corners = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]) @ edges.T
    polys = np.array([shapely.Polygon(c + corners) for c in centres], dtype=object)
    return Footprints(centres, edges=edges), Footprints(centres, geometries=polys)


def test_grid_cells_match_their_polygons():
    """Bins as grid cells (16 bytes each) aggregate and cover exactly as the same bins as polygons."""
    rng = np.random.default_rng(5)
    grid, polys = _grid_and_polygons(rng)
    shape = (21, 25)
    for kw in ({}, {"require_inside": False, "how": "sum"}, {"coverage": "fraction", "supersample": 3}):
        A, kept = footprint_matrix(grid, shape, **kw)
        B, kept_p = footprint_matrix(polys, shape, **kw)
        np.testing.assert_array_equal(kept, kept_p)
        np.testing.assert_allclose(A.toarray(), B.toarray(), atol=1e-12)
    np.testing.assert_allclose(grid.bounds(), polys.bounds(), atol=1e-9)
    pts = rng.uniform(-2, 30, (4000, 2))
    np.testing.assert_array_equal(covered(grid, *pts.T), covered(polys, *pts.T))
    m = np.array([[0.5, 0.1, 3.0], [-0.2, 0.7, -1.0], [0, 0, 1]])
    g2, p2 = grid.affine(m), polys.affine(m)
    np.testing.assert_allclose(
        footprint_matrix(g2, shape, require_inside=False)[0].toarray(),
        footprint_matrix(p2, shape, require_inside=False)[0].toarray(),
        atol=1e-12,
    )
    with pytest.raises(ValueError, match="independent edge"):
        Footprints(np.zeros((1, 2)), edges=np.zeros((2, 2)))


def test_labels_footprints_are_the_bins_of_a_bin_id_raster():
    """A bin-id raster (one pixel per bin) gives the same footprints as the bins drawn as polygons."""
    import anndata as ad
    import geopandas as gpd
    import pandas as pd
    import spatialdata as sd
    from spatialdata.models import Image2DModel, Labels2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Scale, Sequence, Translation

    from stpredict._core import labels_footprints, table_footprints

    img = Image2DModel.parse(np.zeros((3, 64, 80), np.uint8), dims=("c", "y", "x"))
    raster = np.zeros((10, 12), np.int32)
    rows, cols = np.array([1, 1, 2, 7, 9]), np.array([0, 5, 5, 11, 3])
    raster[rows, cols] = 100 + np.arange(5)
    to_img = Sequence([Scale([6.0, 6.0], axes=("x", "y")), Translation([2.0, 1.0], axes=("x", "y"))])
    lab = Labels2DModel.parse(raster, dims=("y", "x"), transformations={"global": to_img})
    boxes = gpd.GeoDataFrame(
        geometry=shapely.box(cols * 6.0 + 2, rows * 6.0 + 1, cols * 6.0 + 8, rows * 6.0 + 7),
        index=100 + np.arange(5),
    )
    s = sd.SpatialData(images={"he": img}, labels={"bins": lab}, shapes={"boxes": ShapesModel.parse(boxes)})
    fp = labels_footprints(s, "bins", "he", instances=np.array([103, 100, 104]))
    assert fp.is_grid
    np.testing.assert_allclose(fp.centres, np.c_[cols[[3, 0, 4]] * 6.0 + 5, rows[[3, 0, 4]] * 6.0 + 4])
    np.testing.assert_allclose(fp.edges, 6 * np.eye(2))
    A, _ = footprint_matrix(fp, (64, 80))
    ref = Footprints(fp.centres, geometries=boxes.geometry.to_numpy()[[3, 0, 4]])
    np.testing.assert_allclose(A.toarray(), footprint_matrix(ref, (64, 80))[0].toarray())
    # a table annotating the raster: footprints in the table's row order
    t = ad.AnnData(obs=pd.DataFrame({"region": pd.Categorical(["bins"] * 3), "id": [104, 101, 102]}))
    s.tables["t"] = TableModel.parse(t, region="bins", region_key="region", instance_key="id")
    fp_t, rows_t = table_footprints(s, "t", "he")
    np.testing.assert_array_equal(rows_t, [0, 1, 2])
    np.testing.assert_allclose(fp_t.centres, np.c_[cols[[4, 1, 2]] * 6.0 + 5, rows[[4, 1, 2]] * 6.0 + 4])
    with pytest.raises(ValueError, match="no pixel"):
        labels_footprints(s, "bins", "he", instances=np.array([7]))
    raster[0, 0] = 100  # an id on two pixels: a segmentation, not bins
    s.labels["cells"] = Labels2DModel.parse(raster, dims=("y", "x"), transformations={"global": to_img})
    with pytest.raises(ValueError, match="one pixel per bin"):
        labels_footprints(s, "cells", "he")


def test_a_multipolygon_aggregates_exactly_over_the_union_of_its_parts():
    """A pooled footprint (pp.pool_footprints' union of disjoint members) is the sum of its members' rows."""
    from scipy import sparse as sp

    parts = [
        shapely.box(2.3, 3.1, 9.7, 8.2),
        shapely.box(14.5, 2.2, 19.1, 11.6),
        shapely.Point(8, 17).buffer(4.2),
    ]
    union = shapely.union_all(parts)
    assert union.geom_type == "MultiPolygon"
    geoms = np.array([*parts, union], dtype=object)
    c = np.array([[g.centroid.x, g.centroid.y] for g in geoms])
    for coverage in ("center", "fraction"):
        A, kept = footprint_matrix(Footprints(c, geometries=geoms), (24, 24), how="sum", coverage=coverage)
        assert list(kept) == [0, 1, 2, 3]
        A = sp.csr_matrix(A)
        np.testing.assert_allclose(A[3].toarray(), A[:3].sum(0), atol=1e-12)
        M, _ = footprint_matrix(Footprints(c, geometries=geoms), (24, 24), how="mean", coverage=coverage)
        w = np.asarray(A[:3].sum(1)).ravel()  # the members' pixel weights
        np.testing.assert_allclose(
            M[3].toarray().ravel(), (w[:, None] * M[:3].toarray()).sum(0) / w.sum(), atol=1e-12
        )
