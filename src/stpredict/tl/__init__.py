"""Tools: SpatialData in, SpatialData out."""

from ._aggregate import aggregate
from ._evaluate import evaluate
from ._predict_dense import predict_dense, tiles_mask, tissue_mask
from ._predict_shapes import predict_shapes
from ._train import train

__all__ = ["aggregate", "evaluate", "predict_dense", "predict_shapes", "tiles_mask", "tissue_mask", "train"]
