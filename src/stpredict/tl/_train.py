"""``tl.train``: the functional entry point to training any stpredict model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from spatialdata import SpatialData

from .. import _docs
from .._core import Recipe
from .._logging import logger
from .._types import ModelName, PresetName

__all__ = ["train"]


@_docs.doc_params(
    sdata=_docs.sdatas,
    tables=_docs.tables,
    image_key=_docs.image_keys,
    n_top_genes=_docs.n_top_genes,
    validation=_docs.validation,
)
def train(
    sdata: SpatialData | Sequence[SpatialData],
    *,
    tables: str | Sequence[str],
    image_key: str | Sequence[str] | None = None,
    genes: Sequence[str] | None = None,
    n_top_genes: int = 250,
    model: ModelName | Any = "pixnet",
    preset: PresetName = "auto",
    validation: int | Sequence[int] | None = None,
    **kwargs: Any,
) -> Any:
    """Train PixNet (or a baseline) on one or several SpatialData sections and return the model.

    The default recipe is the paper's loss and optimiser (MSE + 0.5·(1 − PCC), Adam lr 5e-4,
    weight decay 1e-4, top 250 genes by mean, log1p of total-normalised counts) with a
    **preset** for the architecture and tiling (each model's :attr:`presets`):

    - ``"cpu"``: resnet18 encoder, 64-wide decoder, 2 µm/px, 192 px tiles (384 µm), 4 tiles per
      step, 10 epochs × 50 steps — minutes on a laptop CPU; the recipe for bins and cells;
    - ``"cpu_spots"`` (PixNet): the same network at 4 µm/px, 128 px tiles (512 µm), 8 tiles per step and a moving
      average of the weights (``ema=0.99``) — the recipe chosen on HER2ST spots without its test folds;
    - ``"paper"``: the encoder's ImageNet weights (``pretrained=True``: ``timm/resnet18.a1_in1k`` from
      the Hugging Face Hub, downloaded once; offline pass ``encoder_weights=`` or ``pretrained=False``),
      512-wide decoder, 1 µm/px, 384 px tiles, 8 tiles per step (a GPU run);
    - ``"auto"`` (default): ``"paper"`` when CUDA is available; else ``"cpu_spots"`` when the training footprints
      are spots (the smallest table's median footprint ≥ 50 µm: legacy ST, Visium, pooled spots) and ``"cpu"``
      for bins and cells (it says which in the log).

    All start the encoder from its pretrained weights: ``"paper"`` insists (an error if they cannot be had);
    ``"cpu"`` takes them wherever they can be had (``pretrained="auto"``: the Hugging Face cache, or one download
    when there is network), else starts from a random initialisation **with a warning** that says how to get them
    (:doc:`/encoders`).

    The baselines have matching presets (the same ``train_mpp``; 32 crops per step, or the same tile
    size). For a full run raise ``max_epochs`` / ``steps_per_epoch`` (the paper trains 500 epochs), use
    a pathology-pretrained encoder (``encoder_weights=``) and hold out a section with ``validation=``.

    Parameters
    ----------
    {sdata}
    {tables}
    {image_key}
    genes
        Genes to predict. Default: top ``n_top_genes`` by mean on the training sections.
    {n_top_genes}
    model
        Which model to train: ``"pixnet"`` (default), ``"spot_regressor"``
        (:class:`~stpredict.model.SpotRegressor`, the ST-Net-style crop regressor) or
        ``"linear_probe"`` (:class:`~stpredict.model.LinearProbe`), built with ``preset``; or a model
        instance to train as it is (an untrained model with your settings, or a
        :func:`~stpredict.model.load`-ed checkpoint to resume, optimiser included).
    preset
        ``"auto"``, ``"cpu"``, ``"cpu_spots"`` or ``"paper"``; explicit keyword arguments win over the preset's.
    {validation}
    **kwargs
        Architecture arguments of the model class (for PixNet ``encoder``, ``pretrained``,
        ``encoder_weights``, ``encoder_kwargs``, ``decoder_channels``, ``freeze_encoder``, ``train_mpp`` (µm per pixel),
        ``tile_size`` (pixels at ``train_mpp``), …) and training arguments of its ``train``
        (``max_epochs``, ``steps_per_epoch``, ``batch_size``, ``lr``, ``seed``, ``device``, …); a
        name the model does not take is an error that lists the ones it does.

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
            stp.tl.evaluate(test, pred=f"{{m.key}}_st_spots", truth="spots")

    """
    from ..model import BaseModel, model_class  # torch: only when training

    if isinstance(model, str):
        from ..train import tile_holding

        cls = model_class(model)
        grow_tile = "tile_size" not in kwargs and "tile_size" in cls.architecture_args()
        sizes = _footprint_um(sdata, tables, image_key) if preset == "auto" or grow_tile else None
        name = cls.auto_preset(sizes and sizes[0]) if preset == "auto" else preset
        if name in cls.presets and grow_tile and sizes is not None:
            arch = cls.presets[name].architecture
            tile, mpp = arch.get("tile_size"), kwargs.get("train_mpp", arch.get("train_mpp"))
            if tile is not None and mpp is not None:
                # the preset's tile, or one that holds the largest footprint with a quarter of it to spare
                need = tile_holding(sizes[1] / float(mpp), scale=1.25)
                if need > tile:
                    kwargs["tile_size"] = need
                    logger.info(
                        f"tile_size {need} px (not the preset's {tile}): the largest training footprint spans "
                        f"{sizes[1]:.0f} µm, more than a {tile} px tile at {float(mpp):g} µm/px holds with room."
                    )
        model, fit = cls.from_preset(name, genes, **kwargs)
    elif isinstance(model, BaseModel):
        _, fit = type(model).split_kwargs(kwargs)
        arch = sorted(set(kwargs) - set(fit))
        if arch:
            raise TypeError(
                f"{arch} are architecture arguments of {type(model).__name__}; a model instance is trained as "
                "it was built. Build a new one (or pass `model=` a name with those arguments)."
            )
        if genes is not None and model.genes and list(genes) != model.genes:
            raise ValueError("`genes` differ from the genes of the model being trained.")
        if genes is not None and not model.genes:
            model.recipe = Recipe(list(genes), target_sum=model._target_sum)
    else:
        raise TypeError(f"model must be a model name or an stpredict model, got {type(model).__name__}.")
    return model.train(
        sdata, tables=tables, image_key=image_key, validation=validation, n_top_genes=n_top_genes, **fit
    )


def _footprint_um(
    sdata: SpatialData | Sequence[SpatialData],
    tables: str | Sequence[str],
    image_key: str | Sequence[str] | None,
) -> tuple[float, float] | None:
    """The training footprints' sizes (µm) the presets go by: ``(smallest per-table median, largest)`` diameter.

    ``None`` when they cannot be read (an unlinked table, a missing image): training then reports what is wrong.
    """
    from .._core import default_image_key, get_mpp, table_footprints
    from .._core._footprints import footprint_diameters

    sdatas = [sdata] if isinstance(sdata, SpatialData) else list(sdata)
    names = [tables] if isinstance(tables, str) else list(tables)
    keys = image_key if isinstance(image_key, list | tuple) else [image_key] * len(sdatas)
    medians, largest = [], 0.0
    try:
        for sd, key in zip(sdatas, keys, strict=False):
            key = key or default_image_key(sd)
            for t in names:
                if t not in sd.tables:
                    continue
                fp, _ = table_footprints(sd, t, key)
                if len(fp):
                    d = footprint_diameters(fp) * get_mpp(sd, key)
                    medians.append(float(np.median(d)))
                    largest = max(largest, float(d.max()))
    except Exception:  # training itself raises the precise error
        return None
    return (min(medians), largest) if medians else None
