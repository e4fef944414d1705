"""The torch parts of stpredict (imported lazily by ``stpredict.model``).

- :class:`PixNet`: the dense model (train, predict, save, load);
- :class:`SpotRegressor` and :class:`LinearProbe`: spot-level and linear-probe baselines with the
  same interface, data layer and encoders;
- :func:`load`: load any checkpoint;
- :class:`PixNetModule`: the ``nn.Module`` (tensors in, tensors out);
- :func:`footprint_matrix` / :func:`aggregate_map`: the footprint aggregation operator.
"""

from ._aggregate import Footprints, aggregate_map, footprint_matrix, to_torch_sparse
from ._base import load
from ._baselines import LinearProbe, LinearProbeModule, SpotRegressor, SpotRegressorModule
from ._data import Recipe, normalize_counts, select_genes
from ._model import PRESETS, PixNet
from ._module import Encoder, PixNetModule
from ._train import batch_pcc, pixnet_loss

__all__ = [
    "PRESETS",
    "Encoder",
    "Footprints",
    "LinearProbe",
    "LinearProbeModule",
    "PixNet",
    "PixNetModule",
    "Recipe",
    "SpotRegressor",
    "SpotRegressorModule",
    "aggregate_map",
    "batch_pcc",
    "footprint_matrix",
    "load",
    "normalize_counts",
    "pixnet_loss",
    "select_genes",
    "to_torch_sparse",
]
