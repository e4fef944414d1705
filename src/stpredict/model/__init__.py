"""The torch parts of stpredict (imported lazily by ``stpredict.model``).

- :class:`PixNet`: the user class (train, predict, save, load);
- :class:`PixNetModule`: the ``nn.Module`` (tensors in, tensors out);
- :func:`footprint_matrix` / :func:`aggregate_map`: the footprint aggregation operator.
"""

from ._aggregate import Footprints, aggregate_map, footprint_matrix, to_torch_sparse
from ._data import Recipe, normalize_counts, select_genes
from ._model import PRESETS, PixNet
from ._module import Encoder, PixNetModule
from ._train import batch_pcc, pixnet_loss

__all__ = [
    "PRESETS",
    "Encoder",
    "Footprints",
    "PixNet",
    "PixNetModule",
    "Recipe",
    "aggregate_map",
    "batch_pcc",
    "footprint_matrix",
    "normalize_counts",
    "pixnet_loss",
    "select_genes",
    "to_torch_sparse",
]
