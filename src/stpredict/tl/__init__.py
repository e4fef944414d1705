"""Tools: SpatialData in, SpatialData out."""

from ._aggregate import aggregate
from ._predict_dense import predict_dense, tissue_mask
from ._train import train

__all__ = ["aggregate", "predict_dense", "tissue_mask", "train"]
