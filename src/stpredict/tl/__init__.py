"""Tools: SpatialData in, SpatialData out (``train``, ``predict_dense`` and ``predict_shapes`` load torch)."""

from ..pp._tissue import tiles_mask, tissue_mask
from ._aggregate import aggregate
from ._decode import decode_map
from ._evaluate import evaluate
from ._predict_dense import predict_dense
from ._predict_shapes import predict_shapes
from ._pretrain import pretrain_encoder
from ._train import train

__all__ = [
    "aggregate",
    "decode_map",
    "evaluate",
    "predict_dense",
    "predict_shapes",
    "pretrain_encoder",
    "tiles_mask",
    "tissue_mask",
    "train",
]
