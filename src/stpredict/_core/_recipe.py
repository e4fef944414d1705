"""The gene recipe: which genes a model predicts and how raw counts become its targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .. import _constants as C
from ._validate import check_int, check_names, check_number, check_unique_var_names

__all__ = ["Recipe", "gene_counts", "normalize_counts", "recipe_from_table", "select_genes"]


@dataclass
class Recipe:
    """How raw counts become targets: per-footprint total → ``target_sum``, then log1p, on ``genes``."""

    genes: list[str]
    target_sum: float = 1e4
    log1p: bool = True

    def __post_init__(self) -> None:
        self.genes = check_names("genes", self.genes)
        if not self.genes:
            raise ValueError("`genes` is empty; give at least one gene.")
        self.target_sum = check_number("target_sum", self.target_sum)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON-ready values (stored in checkpoints and in prediction tables' ``uns``)."""
        return {"genes": list(self.genes), "target_sum": float(self.target_sum), "log1p": bool(self.log1p)}

    def describe(self) -> str:
        """What a value in the recipe's units is, in words (recorded with every prediction table).

        The same transform applied to measured counts gives comparable values:
        ``sc.pp.normalize_total(adata, target_sum=...)`` (the total over *all* genes of a footprint),
        then ``sc.pp.log1p(adata)``.
        """
        ts = f"{self.target_sum:g}"
        norm = f"counts / total counts of the footprint (all genes) × {ts}"
        scanpy = f"sc.pp.normalize_total(target_sum={ts})"
        if self.log1p:
            return f"log1p({norm}), as {scanpy} then sc.pp.log1p give for measured counts"
        return f"{norm}, as {scanpy} gives for measured counts"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        """The inverse of :meth:`to_dict`."""
        return cls(list(d["genes"]), target_sum=float(d["target_sum"]), log1p=bool(d.get("log1p", True)))


def _counts(table: AnnData, layer: str | None = None) -> sparse.csr_matrix:
    X = table.layers[layer] if layer else table.X
    return X.tocsr() if sparse.issparse(X) else sparse.csr_matrix(np.asarray(X))


def _selected_counts(table: AnnData, recipe: Recipe, layer: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Counts of ``recipe.genes`` ``(n, M)`` and each footprint's total over all genes ``(n,)``, as float64."""
    check_unique_var_names(table, "The table")
    missing = [g for g in recipe.genes if g not in table.var_names]
    if missing:
        raise ValueError(f"{len(missing)} model gene(s) are missing from the table, e.g. {missing[:5]}.")
    X = _counts(table, layer)
    total = np.asarray(X.sum(1)).ravel().astype(np.float64)
    cols = table.var_names.get_indexer(recipe.genes)
    return X[:, cols].toarray().astype(np.float64), total


def _normalized(sel: np.ndarray, total: np.ndarray, recipe: Recipe) -> np.ndarray:
    """``log1p(sel / total * target_sum)`` (float32); zeros where the total is 0."""
    scale = np.divide(recipe.target_sum, total, out=np.zeros_like(total), where=total > 0)
    out = sel * scale[:, None]
    return (np.log1p(out) if recipe.log1p else out).astype(np.float32)


def normalize_counts(table: AnnData, recipe: Recipe, *, layer: str | None = None) -> np.ndarray:
    """Apply the recipe to a table's counts: ``log1p(x / total * target_sum)`` for ``recipe.genes``.

    The total is over *all* genes of the table (as ``sc.pp.normalize_total``); footprints with no
    counts get zeros.
    """
    return _normalized(*_selected_counts(table, recipe, layer), recipe)


def gene_counts(
    table: AnnData, recipe: Recipe, *, layer: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw counts of ``recipe.genes`` ``(n, M)``, each footprint's total over all genes ``(n,)`` and the targets.

    What a count likelihood needs: the expected count of a gene in a footprint is its total times the
    predicted rate / ``target_sum``. The third array is :func:`normalize_counts` of the same table,
    computed from the same read of the counts.
    """
    sel, total = _selected_counts(table, recipe, layer)
    return sel.astype(np.float32), total.astype(np.float32), _normalized(sel, total, recipe)


def select_genes(tables: Sequence[AnnData], n_top: int = 250) -> list[str]:
    """The ``n_top`` genes with the highest mean expression share, over genes present in every table.

    Each table contributes the mean of its per-footprint expression fractions, so tables of different
    footprint sizes weigh the same; computed on the tables passed (training data only).
    """
    n_top = check_int("n_top_genes", n_top)
    if not tables:
        raise ValueError("No table to select genes from.")
    common = pd.Index(tables[0].var_names)
    for t in tables[1:]:
        common = common[common.isin(t.var_names)]
    if len(common) == 0:
        raise ValueError("The training tables share no gene name.")
    score = np.zeros(len(common))
    for t in tables:
        X = _counts(t)
        total = np.asarray(X.sum(1)).ravel()
        frac = sparse.diags(np.divide(1.0, total, out=np.zeros(len(total)), where=total > 0)) @ X
        score += np.asarray(frac.mean(0)).ravel()[t.var_names.get_indexer(common)]
    order = np.argsort(-score, kind="stable")[: min(n_top, len(common))]
    return list(common[order])


def recipe_from_table(table: AnnData, model: Any = None) -> Recipe:
    """The recipe of a prediction table: ``model.recipe`` when given, else the one in ``uns["stpredict"]``."""
    if model is not None:
        return model.recipe
    rec = table.uns.get(C.UNS_KEY, {}).get("recipe")
    if rec is None:
        raise ValueError(
            "The prediction table does not record the normalisation recipe; pass `model=` (the model that made it)."
        )
    return Recipe.from_dict(rec)
