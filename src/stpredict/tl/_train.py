"""``tl.train``: the functional entry point to PixNet training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spatialdata import SpatialData

    from ..model import LinearProbe, PixNet, SpotRegressor

__all__ = ["train"]


def train(
    sdata: SpatialData | Sequence[SpatialData],
    *,
    tables: str | Sequence[str],
    image_key: str | Sequence[str] | None = None,
    genes: Sequence[str] | None = None,
    n_top_genes: int = 250,
    model: PixNet | SpotRegressor | LinearProbe | str | None = None,
    preset: str = "auto",
    validation: int | Sequence[int] | None = None,
    **kwargs: Any,
) -> PixNet | SpotRegressor | LinearProbe:
    """Train PixNet (or a baseline) on one or several SpatialData sections and return the model.

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
        Which model to train: ``"pixnet"`` (default), ``"spot_regressor"``
        (:class:`~stpredict.model.SpotRegressor`, the ST-Net-style crop regressor) or
        ``"linear_probe"`` (:class:`~stpredict.model.LinearProbe`), built with ``preset``; or a model
        instance to train as it is (an untrained baseline with your settings, or a
        :meth:`~stpredict.model.load`-ed checkpoint to resume, optimiser included).
    preset
        ``"auto"``, ``"cpu"`` or ``"paper"`` (see above; the baselines have matching presets:
        the same ``train_mpp``, and 32 crops per step or the same tile size); explicit keyword
        arguments win.
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
    The trained model; ``model.history`` holds per-epoch metrics.

    Examples
    --------
    Compare PixNet with the spot-level baseline on the same sections::

        pixnet = stp.tl.train(sections, tables="spots", preset="cpu")
        spot = stp.tl.train(sections, tables="spots", model="spot_regressor", preset="cpu")
        for m in (pixnet, spot):
            stp.tl.predict_shapes(test, m, shapes=["st_spots"])
            stp.tl.evaluate(test, pred=f"{m.key}_st_spots", truth="spots")

    """
    import inspect

    from .._logging import logger
    from ..model import PRESETS, LinearProbe, PixNet, SpotRegressor
    from ..model._base import BaseModel
    from ..model._train import resolve_device

    classes = {"pixnet": PixNet, "spot_regressor": SpotRegressor, "linear_probe": LinearProbe}
    if model is None or isinstance(model, str):
        name = model or "pixnet"
        if name not in classes:
            raise ValueError(f"model must be one of {sorted(classes)} or a model instance, got {name!r}.")
        cls = classes[name]
        presets = PRESETS if cls is PixNet else cls.PRESETS
        if preset == "auto":
            preset = "paper" if resolve_device("auto").type == "cuda" else "cpu"
        if preset not in presets:
            raise ValueError(f"preset must be 'auto' or one of {sorted(presets)}, got {preset!r}.")
        settings_ = {**presets[preset], **kwargs}
        arch_names = set(inspect.signature(cls.__init__).parameters) - {"self", "genes"}
        arch = {k: v for k, v in settings_.items() if k in arch_names}
        fit = {k: v for k, v in settings_.items() if k not in arch_names}
        model = cls(genes, **arch)
        logger.info(f"{cls.__name__} preset {preset!r}: {arch}.")
    elif isinstance(model, BaseModel):
        fit = dict(kwargs)
        if genes is not None and model.genes and list(genes) != model.genes:
            raise ValueError("`genes` differ from the genes of the model being trained.")
        if genes is not None and not model.genes:
            from ..model._data import Recipe

            model.recipe = Recipe(list(genes), target_sum=model._target_sum)
    else:
        raise TypeError(f"model must be a model name or an stpredict model, got {type(model).__name__}.")
    accepted = set(inspect.signature(model.train).parameters)
    unknown = sorted(set(fit) - accepted)
    if unknown:
        raise TypeError(
            f"{type(model).__name__} does not take {unknown}; its training arguments are "
            f"{sorted(accepted - {'sdata', 'tables', 'image_key', 'validation', 'n_top_genes'})}."
        )
    return model.train(
        sdata, tables=tables, image_key=image_key, validation=validation, n_top_genes=n_top_genes, **fit
    )
