"""Tools: SpatialData in, SpatialData out."""

from ._aggregate import aggregate
from ._evaluate import evaluate
from ._predict_dense import predict_dense, tissue_mask
from ._train import train

__all__ = ["aggregate", "evaluate", "predict_dense", "tissue_mask", "train"]
