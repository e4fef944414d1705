"""``tl.train``: the functional entry point to PixNet training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spatialdata import SpatialData

    from ..model import PixNet

__all__ = ["train"]


def train(
    sdata: SpatialData | Sequence[SpatialData],
    *,
    tables: str | Sequence[str],
    image_key: str | Sequence[str] | None = None,
    genes: Sequence[str] | None = None,
    n_top_genes: int = 250,
    model: PixNet | None = None,
    preset: str = "auto",
    validation: int | Sequence[int] | None = None,
    **kwargs: Any,
) -> PixNet:
    """Train PixNet on one or several SpatialData sections and return the model.

    The default recipe is the paper's loss and optimiser (MSE + 0.5·(1 − PCC), Adam lr 5e-4,
    weight decay 1e-4, top 250 genes by mean, log1p of total-normalised counts) with a
    **preset** for the architecture and tiling:

    - ``"cpu"``: resnet18 encoder, 64-wide decoder, 2 µm/px, 192 px tiles (384 µm), 4 tiles per
      step, 10 epochs × 50 steps — minutes on a laptop CPU (the four HER2ST sections: see the README);
    - ``"paper"``: 512-wide decoder, 1 µm/px, 384 px tiles, 8 tiles per step (a GPU run);
    - ``"auto"`` (default): ``"paper"`` when CUDA is available, else ``"cpu"``.

    For a full run raise ``max_epochs`` / ``steps_per_epoch`` (the paper trains 500 epochs), use a
    pathology-pretrained encoder (``encoder_weights=``) and hold out a section with ``validation=``.

    Parameters
    ----------
    sdata
        One SpatialData per section; each has an RGB H&E image with a known pixel size
        (:func:`stpredict.pp.get_mpp`) and count tables linked to footprint shapes.
    tables
        Supervision tables of any footprint size, used together (e.g. ``"spots"`` or
        ``["square_002um", "square_008um", "square_016um"]``).
    image_key
        The H&E image (one name, or one per section). Default: the largest RGB image (the full-resolution scan).
    genes
        Genes to predict. Default: top ``n_top_genes`` by mean on the training sections.
    n_top_genes
        Number of genes chosen when ``genes`` is not given.
    model
        Continue training this model (e.g. :meth:`PixNet.load` of a checkpoint: resumes the optimiser).
    preset
        ``"auto"``, ``"cpu"`` or ``"paper"`` (see above); explicit keyword arguments win.
    validation
        Index (or indices) of sections held out for validation and early stopping.
    **kwargs
        Architecture arguments of :class:`~stpredict.model.PixNet` (``encoder``, ``pretrained``,
        ``encoder_weights``, ``decoder_channels``, ``freeze_encoder``, ``train_mpp`` (µm per pixel),
        ``tile_size`` (pixels at ``train_mpp``), …) and training arguments of
        :meth:`~stpredict.model.PixNet.train` (``max_epochs``, ``steps_per_epoch``, ``batch_size``,
        ``lr``, ``seed``, ``device``, …).

    Returns
    -------
    The trained :class:`~stpredict.model.PixNet`; ``model.history`` holds per-epoch metrics.

    """
    import inspect

    from .._logging import logger
    from ..model import PRESETS, PixNet
    from ..model._train import resolve_device

    if model is None:
        if preset == "auto":
            preset = "paper" if resolve_device("auto").type == "cuda" else "cpu"
        if preset not in PRESETS:
            raise ValueError(f"preset must be 'auto' or one of {sorted(PRESETS)}, got {preset!r}.")
        settings_ = {**PRESETS[preset], **kwargs}
        arch_names = set(inspect.signature(PixNet.__init__).parameters) - {"self", "genes"}
        arch = {k: v for k, v in settings_.items() if k in arch_names}
        fit = {k: v for k, v in settings_.items() if k not in arch_names}
        model = PixNet(genes, **arch)
        logger.info(f"PixNet preset {preset!r}: {arch}.")
    else:
        fit = dict(kwargs)
        if genes is not None and list(genes) != model.genes:
            raise ValueError("`genes` differ from the genes of the model being resumed.")
    return model.train(
        sdata, tables=tables, image_key=image_key, validation=validation, n_top_genes=n_top_genes, **fit
    )
