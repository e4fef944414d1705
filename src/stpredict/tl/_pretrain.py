"""``tl.pretrain_encoder``: self-supervised pretraining of a timm encoder on the user's own H&E slides."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from spatialdata import SpatialData

from .. import _docs
from .._core._files import exception_summary
from .._core._image import Pyramid, check_he, section_names
from .._core._store import file_sha256
from .._core._validate import check_int, check_number
from .._logging import logger
from .._settings import settings

__all__ = ["pretrain_encoder"]

_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder, then rename: a killed run leaves the old file."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _tile_centres(
    sdata: SpatialData, image_key: str, step: float, tiles: str | None, rng: np.random.Generator
) -> np.ndarray:
    """Candidate tile centres (full-resolution px) on tissue or inside selected ``tiles``, jittered by ±step/2."""
    from ..pp._tissue import tiles_mask, tissue_mask

    h, w = Pyramid.from_sdata(sdata, image_key).shape
    shape = (max(1, int(h // step)), max(1, int(w // step)))
    mask = tiles_mask(sdata, tiles, image_key, shape) if tiles else tissue_mask(sdata, image_key, shape)
    r, c = np.nonzero(mask)
    centres = np.c_[(c + 0.5) * w / shape[1], (r + 0.5) * h / shape[0]]
    return centres + rng.uniform(-step / 2, step / 2, centres.shape)


def _collect_tiles(
    sdatas: Sequence[SpatialData],
    image_keys: Sequence[str],
    *,
    names: Sequence[str],
    train_mpp: float,
    pool_px: int,
    n_tiles: int,
    tiles: str | None,
    seed: int,
    progress: bool,
) -> tuple[np.ndarray, list[int]]:
    """``n_tiles`` tissue tiles of ``pool_px`` px at ``train_mpp`` drawn from all slides (in proportion to tissue)."""
    from .._core._mpp import get_mpp
    from .._progress import tqdm

    rng = np.random.default_rng(seed)
    cands = []
    for sdata, key in zip(sdatas, image_keys, strict=True):
        side = pool_px * train_mpp / get_mpp(sdata, key)  # full-resolution px per pool tile
        cands.append((_tile_centres(sdata, key, side / 2, tiles, rng), side))
    sizes = np.array([len(c) for c, _ in cands])
    where = f"inside the tiles {tiles!r}" if tiles else "on tissue"
    if sizes.sum() == 0:
        raise ValueError(
            f"No tissue found to draw tiles from (no tile {where} in slide(s) {list(names)})"
            + "; check the images (H&E on a light background) or pass `tiles=` from `stpredict.pp.select_tiles`."
        )
    empty = [n for n, k in zip(names, sizes, strict=True) if k == 0]
    if empty:
        logger.warning(f"No tile {where} in slide(s) {empty}: pretraining draws no tiles from them.")
    flat = np.concatenate([np.c_[np.full(n, i), np.arange(n)] for i, n in enumerate(sizes)])
    pick = flat[rng.choice(len(flat), size=n_tiles, replace=n_tiles > len(flat))]
    pick = pick[np.lexsort((pick[:, 1], pick[:, 0]))]  # read slide by slide, in position order
    out = np.empty((n_tiles, pool_px, pool_px, 3), np.uint8)
    # cache=True: the level read from is computed once (a dask pyramid level is one graph, ~0.4 s per window)
    pyramids = [Pyramid.from_sdata(s, k, cache=True) for s, k in zip(sdatas, image_keys, strict=True)]
    for j, (i, t) in enumerate(tqdm(pick, desc="reading tiles", progress=progress, leave=False)):
        (cx, cy), half = cands[i][0][t], cands[i][1] / 2
        out[j] = pyramids[i].read((cx - half, cy - half, cx + half, cy + half), (pool_px, pool_px))
    return out, np.bincount(pick[:, 0], minlength=len(sdatas)).tolist()


def _encoder_state(encoder: Any) -> dict:
    """The encoder's weights as the timm model's state dict (what ``encoder_weights=`` loads)."""
    body = encoder.body.vit if encoder.is_vit else encoder.body
    return {k: v.detach().cpu().contiguous() for k, v in body.state_dict().items()}


def _save_weights(state: dict, path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        _atomic_write(path, lambda p: save_file(state, os.fspath(p)))
    else:
        import torch

        _atomic_write(path, lambda p: torch.save(state, p))


@_docs.doc_params(image_key=_docs.image_keys, device=_docs.device, progress=_docs.progress)
def pretrain_encoder(
    sdata: SpatialData | Sequence[SpatialData],
    weights: str | os.PathLike,
    *,
    image_key: str | Sequence[str] | None = None,
    encoder: str = "resnet18",
    method: Literal["simsiam"] = "simsiam",
    train_mpp: float = 2.0,
    tile_size: int = 96,
    tiles: str | None = None,
    n_tiles: int = 4096,
    max_epochs: int = 20,
    steps_per_epoch: int = 50,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    pretrained: bool = False,
    encoder_weights: str | os.PathLike | None = None,
    seed: int | None = None,
    device: str | None = None,
    progress: bool | None = None,
    overwrite: bool = False,
) -> Path:
    """Pretrain a timm encoder on tissue tiles of H&E slides without labels (SimSiam).

    Tiles are drawn from the tissue of every slide (or from tiles selected with
    :func:`stpredict.pp.select_tiles`) at ``train_mpp``, the pixel size the model will be trained at,
    and the encoder learns to give two augmented views of a tile the same representation. Views
    differ by position, 90° turns and flips, H&E stain jitter (HED space), brightness, contrast,
    saturation and blur: what changes between scans and labs, not what changes expression. The
    slides need only an image: no counts or shapes are read, so any H&E slide can be used. To score
    a model fairly, pretrain only on slides that are not in its test set.

    Parameters
    ----------
    sdata
        One SpatialData or several, each with an RGB H&E image of known pixel size.
    weights
        Where to write the encoder weights (``.pth``, ``.pt``, ``.bin`` or ``.safetensors``); pass it as
        ``encoder_weights=`` to :func:`stpredict.tl.train` or any model. Beside it go
        ``{{weights}}.json`` (how it was trained, the loss history, the checksum) and, while training
        runs, ``{{weights}}.state.pt`` (to resume).
    {image_key}
    encoder
        timm model name; the same name must be given to the model that loads the weights.
    method
        The self-supervised method: ``"simsiam"`` (Chen & He, 2021: no negative pairs, no momentum
        encoder, works with small batches).
    train_mpp
        Pixel size (µm) of the tiles; use the model's ``train_mpp`` (2 for the ``cpu`` presets, 1 for
        ``paper``).
    tile_size
        Side of each view in pixels at ``train_mpp``; tiles are read 1.5× larger, and views are random
        windows of them.
    tiles
        Name of a shapes element of selected tiles (:func:`stpredict.pp.select_tiles`, Shannon or
        Otsu) in every slide to draw from; default: the tissue mask (:func:`stpredict.tl.tissue_mask`).
    n_tiles
        How many tiles to read (in memory, ``n_tiles × (1.5 · tile_size)² × 3`` bytes), spread over
        the slides in proportion to their tissue.
    max_epochs, steps_per_epoch, batch_size
        ``max_epochs × steps_per_epoch`` steps of ``batch_size`` tiles (two views each).
    lr, weight_decay
        AdamW's peak learning rate (cosine decay to 0) and weight decay.
    pretrained, encoder_weights
        Start from the hub's or a local file's weights instead of a random initialisation
        (domain-adaptive pretraining).
    seed
        Random seed (tiles, views, initialisation); default :attr:`stpredict.settings.seed`. The same
        seed gives the same weights on the CPU, also when a run was interrupted and resumed.
    {device}
    {progress}
    overwrite
        Replace an existing ``weights`` file (and its ``.json``) trained otherwise. Without it, a
        finished run with the same settings is returned as is, an interrupted one resumes from its
        last completed epoch, and anything else is an error.

    Returns
    -------
    The path of the weights file.

    Examples
    --------
    >>> import stpredict as stp
    >>> sdata = stp.datasets.synthetic(seed=0)
    >>> w = stp.tl.pretrain_encoder(sdata, "ssl_resnet18.pth", n_tiles=256, max_epochs=1, steps_per_epoch=5)
    >>> model = stp.tl.train(sdata, tables="st_spots", encoder_weights=w)  # doctest: +SKIP

    """
    import torch

    from ..module import Encoder
    from ..train._ssl import SimSiam, pretrain_simsiam

    sdatas = [sdata] if isinstance(sdata, SpatialData) else list(sdata)
    if not sdatas or not all(isinstance(s, SpatialData) for s in sdatas):
        raise TypeError("`sdata` must be a SpatialData or a non-empty sequence of them.")
    if method != "simsiam":
        raise ValueError(f"method must be 'simsiam'; got {method!r}.")
    weights = Path(weights)
    if weights.suffix not in _SUFFIXES:
        raise ValueError(
            f"`weights` must end in one of {_SUFFIXES} (the weights file to write); got {weights}."
        )
    if weights.is_dir():
        raise IsADirectoryError(f"`weights` is a folder: {weights}; give the path of a file to write.")
    keys = image_key if isinstance(image_key, Sequence) and not isinstance(image_key, str) else None
    if keys is not None and len(keys) != len(sdatas):
        raise ValueError(
            f"Got {len(keys)} image keys for {len(sdatas)} slides; give one per slide or one for all."
        )
    image_keys = [check_he(s, keys[i] if keys else image_key)[0] for i, s in enumerate(sdatas)]
    train_mpp = check_number("train_mpp", train_mpp)
    tile_size = check_int("tile_size", tile_size, minimum=32)
    n_tiles = check_int("n_tiles", n_tiles, minimum=2)
    max_epochs = check_int("max_epochs", max_epochs)
    steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch)
    batch_size = check_int("batch_size", batch_size, minimum=2)
    lr = check_number("lr", lr)
    weight_decay = check_number("weight_decay", weight_decay, minimum=0.0)
    seed = settings.seed if seed is None else check_int("seed", seed, minimum=0)
    if tiles is not None:
        missing = [
            n for s, n in zip(sdatas, section_names(sdatas, image_keys), strict=True) if tiles not in s.shapes
        ]
        if missing:
            raise KeyError(
                f"No shapes {tiles!r} in slide(s) {missing}; create them with "
                f"`stpredict.pp.select_tiles(sdata, key_added={tiles!r})`."
            )
    pool_px = tile_size + tile_size // 2
    config = {
        "method": method,
        "encoder": encoder,
        "train_mpp": train_mpp,
        "tile_size": tile_size,
        "tiles": tiles,
        "n_tiles": n_tiles,
        "max_epochs": max_epochs,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "seed": seed,
        "init": "hub" if pretrained else (os.fspath(encoder_weights) if encoder_weights else "random"),
        "slides": section_names(sdatas, image_keys),
    }
    meta_path = Path(f"{weights}.json")
    state_path = Path(f"{weights}.state.pt")
    state = None
    if overwrite and weights.exists() and not meta_path.exists() and not state_path.exists():
        raise FileExistsError(
            f"{weights} exists and has no record {meta_path.name} beside it: stpredict did not write it, so even "
            "`overwrite=True` does not replace it (it may be your own encoder's weights). Choose another path."
        )
    if overwrite:
        state_path.unlink(missing_ok=True)
    elif state_path.is_file():
        state = _read_state(state_path)
        if state.get("config") != config:
            raise FileExistsError(
                f"{state_path} holds an interrupted pretraining with other settings; pass `overwrite=True` to start "
                f"over, or the same settings to resume ({_diff(state.get('config', {}), config)})."
            )
        logger.info(f"Resuming the pretraining in {state_path} after epoch {len(state['history'])}.")
    elif weights.exists():
        meta = _read_meta(meta_path)
        old = meta.get("config")
        if old == config and file_sha256(weights) == meta.get("sha256"):
            logger.info(f"{weights} was pretrained with these settings already; returning it.")
            return weights
        if old == config:
            why = f" but does not match the checksum in {meta_path.name}: it was truncated or modified after pretraining"
        elif old:
            why = f" and was trained otherwise ({_diff(old, config)})"
        else:
            why = f" and {meta.get('_problem', f'has no record {meta_path.name} beside it')}"
        raise FileExistsError(
            f"{weights} exists{why}; pass `overwrite=True` to replace it with a new pretraining, or another path."
        )
    weights.parent.mkdir(parents=True, exist_ok=True)
    dev = settings.resolve_device(device)
    torch.manual_seed(seed)
    net = SimSiam(Encoder(encoder, pretrained=pretrained, weights=encoder_weights))
    pool, per_slide = _collect_tiles(
        sdatas,
        image_keys,
        names=config["slides"],
        train_mpp=train_mpp,
        pool_px=pool_px,
        n_tiles=n_tiles,
        tiles=tiles,
        seed=seed,
        progress=progress,
    )
    logger.info(
        f"Pretraining {encoder} ({method}) on {n_tiles} tiles of {pool_px} px at {train_mpp:g} µm/px "
        f"from {len(sdatas)} slide(s) ({per_slide}), {max_epochs} × {steps_per_epoch} steps of {batch_size}, "
        f"device {dev}."
    )

    def save_state(s: dict) -> None:
        _atomic_write(state_path, lambda p: torch.save({**s, "config": config}, p))

    history = pretrain_simsiam(
        net,
        pool,
        view_size=tile_size,
        max_epochs=max_epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        state=state,
        on_epoch_end=save_state,
        device=dev,
        progress=progress,
    )
    _save_weights(_encoder_state(net.encoder), weights)
    meta = {
        "stpredict": "encoder weights from stpredict.tl.pretrain_encoder",
        "config": config,
        "tiles_per_slide": per_slide,
        "history": history,
        "sha256": file_sha256(weights),
    }
    _atomic_write(meta_path, lambda p: p.write_text(json.dumps(meta, indent=2)))
    state_path.unlink(missing_ok=True)
    last = history[-1]
    if last["z_std"] < 0.1 / np.sqrt(net.projector[-1].num_features):
        logger.warning(
            f"The projections collapsed (z_std {last['z_std']:.4f}): the encoder learned a constant. Use a lower `lr`, "
            "more tiles or other slides."
        )
    logger.info(f"Wrote {weights} (loss {last['loss']:.4f}, z_std {last['z_std']:.3f}).")
    return weights


_STATE_KEYS = ("net", "optimizer", "generator", "history", "config")


def _read_state(path: Path) -> dict:
    """The resume state of an interrupted pretraining, or a clear error when it cannot be used."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds for a damaged file (EOF, pickle, zip)
        why = f"it is truncated or corrupt ({exception_summary(exc)})"
    else:
        missing = [k for k in _STATE_KEYS if k not in state] if isinstance(state, dict) else list(_STATE_KEYS)
        if not missing:
            return state
        why = f"it is not a pretraining state (it lacks {missing})"
    raise ValueError(
        f"{path}, the saved state of an interrupted pretraining, cannot be resumed: {why}. Pass `overwrite=True` "
        "to delete it and start the pretraining afresh."
    )


def _read_meta(path: Path) -> dict:
    """The record ``{weights}.json`` of finished weights; ``{"_problem": ...}`` when it is missing or unreadable."""
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return {"_problem": f"its record {path.name} cannot be read (truncated or corrupt: {exc})"}
    if not isinstance(meta, dict):
        return {"_problem": f"its record {path.name} is not a pretraining record"}
    return meta


def _diff(old: dict | None, new: dict) -> str:
    if not old:
        return "no record of its settings"
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in keys) or "same settings"
