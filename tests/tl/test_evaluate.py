from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import spatialdata as sd
from scipy.stats import pearsonr
from skimage.metrics import structural_similarity
from sklearn.metrics import adjusted_rand_score
from spatialdata.models import TableModel

import stpredict as stp
from stpredict.model import Recipe, normalize_counts


def _with_prediction(slide, truth: str, noise: float, seed: int, constant_gene: bool = False):
    """A SpatialData holding a truth table and a 'prediction' = normalised truth + noise, on the same shapes."""
    t = slide.tables[truth]
    region = t.uns["spatialdata_attrs"]["region"]
    genes = list(t.var_names[:6])
    recipe = Recipe(genes)
    T = normalize_counts(t, recipe, layer="expected")
    P = T + np.random.default_rng(seed).normal(0, noise, T.shape).astype(np.float32)
    if constant_gene:
        P[:, 0] = 1.0
    obs = t.obs[["region", "instance_id"]].copy()
    pred = ad.AnnData(X=P, obs=obs, var=t.var.loc[genes].copy())
    pred.uns["stpredict"] = {"recipe": recipe.to_dict()}
    pred = TableModel.parse(pred, region=region, region_key="region", instance_key="instance_id")
    s = sd.SpatialData(shapes={region: slide[region]}, tables={truth: t, "pred": pred})
    return s, P, T


def test_metrics_match_independent_implementations(synthetic_small):
    s, P, T = _with_prediction(synthetic_small, "square_016um", noise=0.5, seed=0, constant_gene=True)
    per_gene, summary = stp.tl.evaluate(
        s, pred="pred", truth="square_016um", layer="expected", domain_key="domain"
    )
    row = summary.loc["section"]
    ref = np.array([pearsonr(P[:, g], T[:, g])[0] if g else np.nan for g in range(6)])
    np.testing.assert_allclose(per_gene["pcc"].to_numpy()[1:], ref[1:], rtol=1e-6)
    assert np.isnan(per_gene["pcc"].iloc[0]) and per_gene["constant"].iloc[0]
    assert row["n_constant_genes"] == 1
    ok = ref[1:]
    assert row["PCC@F"] == pytest.approx(np.quantile(ok, 0.25))
    assert row["PCC@S"] == pytest.approx(np.median(ok))
    assert row["PCC@M"] == pytest.approx(ok.mean())
    assert row["MSE"] == pytest.approx(((P - T) ** 2).mean(), rel=1e-6)
    assert row["MAE"] == pytest.approx(np.abs(P - T).mean(), rel=1e-6)
    assert row["RMSE"] == pytest.approx(np.sqrt(((P - T) ** 2).mean()), rel=1e-6)
    # SSIM of gene 2 on the bins' own grid, computed by hand
    t = s.tables["square_016um"]
    r, c = t.obs["array_row"].to_numpy(), t.obs["array_col"].to_numpy()
    img_t = np.zeros((r.max() - r.min() + 1, c.max() - c.min() + 1))
    img_p = img_t.copy()
    img_t[r - r.min(), c - c.min()] = T[:, 2]
    img_p[r - r.min(), c - c.min()] = P[:, 2]
    ref_ssim = structural_similarity(img_t, img_p, data_range=img_t.max() - img_t.min())
    assert per_gene["ssim"].iloc[2] == pytest.approx(ref_ssim, rel=1e-6)
    assert {"ARI_pred_vs_truth", "ARI_pred_vs_domains", "ARI_truth_vs_domains"} <= set(summary.columns)
    assert s.tables["pred"].uns["stpredict"]["evaluation"]["section"]["PCC@M"] == pytest.approx(row["PCC@M"])


def test_perfect_prediction_and_ari(synthetic_small):
    s, _, _ = _with_prediction(synthetic_small, "square_016um", noise=0.0, seed=0)
    per_gene, summary = stp.tl.evaluate(s, pred="pred", truth="square_016um", layer="expected", ssim=False)
    assert summary.loc["section", "ARI_pred_vs_truth"] == pytest.approx(1.0)
    assert summary.loc["section", "MSE"] == pytest.approx(0.0, abs=1e-10)
    np.testing.assert_allclose(per_gene["pcc"], 1.0, rtol=1e-6)
    assert adjusted_rand_score([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0  # label permutations do not matter


def test_sections_and_pooled_are_reported_side_by_side(synthetic_small):
    s1, P1, T1 = _with_prediction(synthetic_small, "square_016um", noise=0.3, seed=1)
    s2, P2, T2 = _with_prediction(synthetic_small, "square_016um", noise=1.5, seed=2)
    per_gene, summary = stp.tl.evaluate(
        [s1, s2], pred="pred", truth="square_016um", layer="expected", ari=False, section_names=["A", "B"]
    )
    assert list(summary.index) == ["A", "B", "pooled"]
    pooled = np.array([pearsonr(np.r_[P1[:, g], P2[:, g]], np.r_[T1[:, g], T2[:, g]])[0] for g in range(6)])
    np.testing.assert_allclose(per_gene.loc[per_gene.section == "pooled", "pcc"], pooled, rtol=1e-6)
    assert summary.loc["A", "PCC@M"] > summary.loc["B", "PCC@M"]


def test_mismatched_footprints_error(synthetic_small):
    s, _, _ = _with_prediction(synthetic_small, "square_016um", noise=0.1, seed=0)
    s.tables["square_008um"] = synthetic_small.tables["square_008um"]
    with pytest.raises(ValueError, match=r"not the same footprints.*shapes=\['synthetic_square_008um'\]"):
        stp.tl.evaluate(s, pred="pred", truth="square_008um")
    with pytest.raises(KeyError, match="Truth table 'nope'"):
        stp.tl.evaluate(s, pred="pred", truth="nope")


def test_sections_are_named_by_their_dataset_id(synthetic_small):
    """Summaries name sections as their readers did (the micron coordinate system's stem), made unique."""
    from stpredict._core import section_names

    assert section_names([synthetic_small, synthetic_small]) == ["synthetic", "synthetic_2"]
    s, _, _ = _with_prediction(synthetic_small, "square_016um", noise=0.5, seed=0)
    s.images["synthetic_full_image"] = synthetic_small.images["synthetic_full_image"]
    _, summary = stp.tl.evaluate(
        s, pred="pred", truth="square_016um", layer="expected", ssim=False, ari=False
    )
    assert list(summary.index) == ["synthetic"]
