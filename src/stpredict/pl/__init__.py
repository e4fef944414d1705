"""Plotting: dense maps over the H&E, measured vs predicted, per-gene scores."""

from ._plots import compare, expression_map, gene_scores

__all__ = ["compare", "expression_map", "gene_scores"]
