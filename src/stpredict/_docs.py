"""Shared parameter documentation (scanpy's ``_doc_params`` style): each common parameter is written once.

A docstring decorated with :func:`doc_params` is cleaned with :func:`inspect.cleandoc` and then formatted
with these fragments, so a fragment is written at column 0 and placed at column 0 of the docstring's
*Parameters* section (``{sdata}``). Literal braces in such a docstring are doubled (``{{key_added}}``).

The ``key_added`` convention (the same in ``pp``, ``tl`` and the command line): a function that writes
elements takes ``key_added``; the element it writes is named ``key_added``, or, when it writes several,
each is named ``f"{key_added}_{what}"``. Functions that *read* such results (plots) take ``key``, the
``key_added`` of the call that wrote them, as in scanpy (``sc.tl.rank_genes_groups(key_added=...)`` then
``sc.pl.rank_genes_groups(key=...)``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

__all__ = ["doc_params"]

F = TypeVar("F", bound=Callable)


def doc_params(**fragments: str) -> Callable[[F], F]:
    """Fill ``{name}`` placeholders of the decorated object's docstring with shared fragments."""

    def decorate(obj: F) -> F:
        obj.__doc__ = inspect.cleandoc(obj.__doc__ or "").format_map(fragments)
        return obj

    return decorate


sdata = """\
sdata
    SpatialData with an RGB H&E image whose pixel size is known (:func:`stpredict.pp.get_mpp`)."""

sdatas = """\
sdata
    One SpatialData per section; each has an RGB H&E image with a known pixel size
    (:func:`stpredict.pp.get_mpp`) and count tables linked to footprint shapes."""

image_key = """\
image_key
    The H&E image. Default: the largest RGB uint8 image (the full-resolution scan)."""

image_keys = """\
image_key
    The H&E image, one name for every section or one per section. Default: the largest RGB uint8
    image of each section (the full-resolution scan)."""

key_added_prefix = """\
key_added
    Stem of the names of the elements written (``f"{key_added}_…"``); default ``model.key``
    (``"pixnet"``, ``"spot_regressor"``, ``"linear_probe"``)."""

overwrite = """\
overwrite
    Replace existing elements of the same names that stpredict wrote earlier (the provenance registry
    ``sdata.attrs["stpredict"]["written"]``); elements stpredict did not write are never replaced. Without it an
    existing name is an error. Either way the old elements stay until the new ones are complete."""

device = """\
device
    ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``;
    default :attr:`stpredict.settings.device`."""

progress = """\
progress
    Show a progress bar; default :attr:`stpredict.settings.progress_bar`."""

seed = """\
seed
    Random seed (tile sampling, augmentation, initialisation); default :attr:`stpredict.settings.seed`.
    Training is deterministic on the CPU."""

tables = """\
tables
    Supervision tables (counts linked to shapes) of any footprint size, used together, e.g.
    ``"spots"`` or ``["square_002um", "square_008um", "square_016um"]``."""

validation = """\
validation
    Index (or indices) of sections held out for validation (and early stopping, for trained networks)."""

n_top_genes = """\
n_top_genes
    Genes to predict when the model has none yet: the top ``n_top_genes`` by mean expression share on
    the training tables only."""

tiles = """\
tiles
    A shapes element (the same name in every section) of selected tiles, e.g. from
    :func:`stpredict.pp.select_tiles`: only footprints centred in a selected tile are trained on
    (validation sections keep all their footprints)."""

coverage = """\
coverage
    Footprint membership: ``"center"`` (a pixel belongs when its centre is inside) or ``"fraction"``
    (weight = the covered fraction of the pixel)."""

how = """\
how
    ``"mean"`` (the map is an expression level, so one map serves every footprint size) or ``"sum"``
    (PixNet's Eq. 5) of the pixels of each footprint."""

chunk_size = """\
chunk_size
    Side of a block of the map in output pixels (rounded to whole network strides); the network runs
    on one block plus its context margin at a time, so memory depends on this, not on the slide.
    Default: 512 in :func:`stpredict.tl.predict_dense` (the stored map's chunks), 256 for a model's
    in-memory predictions (the fastest on a CPU)."""

margin = """\
margin
    Context added around each block (within the image) before running the network and cropped
    afterwards, in output pixels (default ``min(chunk_size // 4, 128)``, rounded up to whole network strides).
    With a margin at least the network's receptive field the tiled map equals the network run once
    over the whole image."""

fit = """\
max_epochs, steps_per_epoch, batch_size
    Training length: ``max_epochs × steps_per_epoch`` optimiser steps of ``batch_size`` tiles (PixNet)
    or crops (SpotRegressor); ``batch_size`` defaults to that of the model's previous training (a
    resumed model keeps its batch size), else to the model's :attr:`default_batch_size`.
lr, weight_decay, lam
    Adam learning rate and weight decay, weight λ of the PCC term of the loss
    MSE + λ·(1 − PCC). Default (``None``): the values of the model's previous training when it is
    resumed, else the paper's 5e-4, 1e-4, 0.5.
ema
    Keep an exponential moving average of the weights with this decay per step (e.g. ``0.99``:
    about the last 100 steps once warmed up; the warm-up ``min(ema, (1 + t) / (10 + t))`` at step
    ``t`` makes it about the last 50 at step 500) and end with the averaged weights, which
    validation scores; ``0`` keeps the last step's weights. Default (``None``): the previous
    training's setting when resumed, else no average.
lr_schedule
    ``"constant"`` keeps ``lr``; ``"cosine"`` decays it over this call's ``max_epochs × steps_per_epoch``
    steps from ``lr`` to ``lr / 100`` along half a cosine (early stopping may end it sooner). Default
    (``None``): the previous training's setting when resumed, else ``"constant"``.
patience
    Early stopping patience in epochs on the validation loss (needs ``validation``); the weights of
    the best validation epoch are restored at the end.
augment
    Random 90° rotations and flips of tiles/crops with their footprints, plus light colour jitter when
    the encoder is trained. Default (``None``): the previous training's setting when resumed, else
    ``True``."""

key_read = """\
key
    The ``key_added`` of the :func:`stpredict.tl.predict_dense` run to draw: the map is
    ``images[f"{key}_dense"]``."""

show = """\
show
    Show the figure (default: when the backend is interactive).
return_fig
    Return the figure instead of the axes."""

show_save = """\
show
    Show the figure (default: when the backend is interactive; in a script, pass ``save``).
save
    Write the figure to this file (``.png`` unless the name has a suffix); ``True``: ``<plot>_<gene>.png`` in the
    working folder.
return_fig
    Return the figure instead of the axes."""
