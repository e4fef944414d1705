"""Networks (``nn.Module`` subclasses) only: tensors in, tensors out (never AnnData or SpatialData). Imports torch.

- :class:`Encoder` (+ :class:`ViTPyramid`): a timm backbone as a feature pyramid;
- :class:`PixNetModule`: encoder → U-Net-style decoder → 1×1 head → dense map;
- :class:`SpotRegressorModule`, :class:`LinearProbeModule`: the baselines' networks;
- :class:`Loss` (:class:`MSEPCC`, :class:`PoissonPCC`) and :func:`register_loss`: the losses networks own
  (``net.loss()``), which training steps and validation call alike;
- :func:`aggregate_map` / :func:`to_torch_sparse` / :func:`bilinear_matrix`: footprint aggregation of dense maps
  in torch, and resizing as a matrix (to aggregate before a linear head).
"""

from .._settings import settings
from ._aggregate import aggregate_map, bilinear_matrix, to_torch_sparse
from ._encoder import Encoder, ViTPyramid, pretrained_available, random_init_message
from ._linear_probe import LinearProbeModule
from ._loss import LOSSES, MSEPCC, Loss, OwnsLoss, PoissonPCC, get_loss, register_loss
from ._pixnet import DFFN, DecoderStage, LayerNorm2d, PixNetModule, ResizeUp
from ._spot_regressor import SpotRegressorModule

settings._apply_n_jobs()  # torch is loaded now: give it the configured number of threads

__all__ = [
    "DFFN",
    "LOSSES",
    "MSEPCC",
    "DecoderStage",
    "Encoder",
    "LayerNorm2d",
    "LinearProbeModule",
    "Loss",
    "OwnsLoss",
    "PixNetModule",
    "PoissonPCC",
    "ResizeUp",
    "SpotRegressorModule",
    "ViTPyramid",
    "aggregate_map",
    "bilinear_matrix",
    "get_loss",
    "pretrained_available",
    "random_init_message",
    "register_loss",
    "to_torch_sparse",
]
