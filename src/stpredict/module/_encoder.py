"""A timm backbone as a feature pyramid, with its input normalisation and stride padding."""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from .._core._files import check_file, check_weights_file

__all__ = ["Encoder", "ViTPyramid", "as_encoder", "encoder_kwargs_config", "resolve_encoder_kwargs"]


class ViTPyramid(nn.Module):
    """A simple feature pyramid from intermediate ViT blocks (ViTDet-style).

    Four blocks at stride ``p`` (the patch size) become maps at strides ``p/4, p/2, p, 2p`` by two
    transposed convolutions, one transposed convolution, identity and max-pooling.
    """

    def __init__(self, vit: nn.Module, indices: Sequence[int] | int = 4) -> None:
        super().__init__()
        self.vit = vit
        self.indices = indices
        dim = vit.embed_dim
        patch = vit.patch_embed.patch_size[0]
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 2, 2, 2), nn.GELU(), nn.ConvTranspose2d(dim // 2, dim // 4, 2, 2)
        )
        self.up2 = nn.ConvTranspose2d(dim, dim // 2, 2, 2)
        self.down2 = nn.MaxPool2d(2)
        self.channels = [dim // 4, dim // 2, dim, dim]
        self.reductions = [patch // 4, patch // 2, patch, patch * 2]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.vit.forward_intermediates(
            x, indices=self.indices, output_fmt="NCHW", intermediates_only=True
        )
        f1, f2, f3, f4 = feats[-4:]
        return [self.up4(f1), self.up2(f2), f3, self.down2(f4)]


#: Keyword arguments :class:`Encoder` sets itself (a ViT's head, the CNN feature pyramid, the weights).
_RESERVED = frozenset(
    {"model_name", "pretrained", "features_only", "num_classes", "out_indices", "checkpoint_path"}
)
#: Modules a stored ``*_layer`` import path may point into (a checkpoint's config names classes, never code).
_LAYER_MODULES = ("timm.", "torch.nn.")


def _named(v: Any) -> str | None:
    """The import path of a timm layer or torch.nn class (``"timm.layers.SwiGLUPacked"``), else ``None``."""
    import timm.layers

    for mod_name, mod in (("timm.layers", timm.layers), ("torch.nn", nn)):
        for attr, obj in vars(mod).items():
            if obj is v and not attr.startswith("_"):
                return f"{mod_name}.{attr}"
    if isinstance(v, type) and v.__module__.startswith(_LAYER_MODULES):
        return f"{v.__module__}.{v.__qualname__}"
    return None


def _as_json(key: str, v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if hasattr(v, "item") and not hasattr(v, "__len__"):  # numpy / torch scalars
        return v.item()
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, list | tuple):
        return [_as_json(key, x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _as_json(key, x) for k, x in v.items()}
    name = _named(v)
    if name is None:
        raise TypeError(
            f"encoder_kwargs[{key!r}] = {v!r} cannot be stored in a checkpoint. Give numbers, strings, lists or "
            "dicts, or a layer class from timm.layers or torch.nn (e.g. timm.layers.SwiGLUPacked, torch.nn.SiLU) "
            "or its name as a string ('timm.layers.SwiGLUPacked')."
        )
    return name


def encoder_kwargs_config(kwargs: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``encoder_kwargs`` as JSON values for a checkpoint: layer classes become their import path.

    ``{"mlp_layer": timm.layers.SwiGLUPacked, "act_layer": torch.nn.SiLU}`` is stored as
    ``{"mlp_layer": "timm.layers.SwiGLUPacked", "act_layer": "torch.nn.SiLU"}``;
    :func:`resolve_encoder_kwargs` turns it back into the classes.
    """
    if kwargs is None:
        return None
    if not isinstance(kwargs, Mapping):
        raise TypeError(
            f"encoder_kwargs must be a dict of timm.create_model arguments, got {type(kwargs).__name__}."
        )
    out = {}
    for k, v in kwargs.items():
        if not isinstance(k, str):
            raise TypeError(f"encoder_kwargs keys must be argument names (strings), got {k!r}.")
        if k in _RESERVED:
            raise ValueError(
                f"encoder_kwargs may not set {k!r}: stpredict sets it (use `pretrained=` / `encoder_weights=` for "
                "weights; the head and feature pyramid are the encoder's own)."
            )
        out[k] = _as_json(k, v)
    return out


def _layer(key: str, name: str) -> Any:
    if "." not in name:
        import timm.layers

        obj = getattr(timm.layers, name, None)
        return name if obj is None else obj  # e.g. act_layer="silu": timm resolves such names itself
    if not name.startswith(_LAYER_MODULES):
        raise ValueError(
            f"encoder_kwargs[{key!r}] = {name!r}: only layers from timm or torch.nn can be named "
            "(e.g. 'timm.layers.SwiGLUPacked', 'torch.nn.SiLU')."
        )
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"encoder_kwargs[{key!r}] = {name!r} names no layer of this timm/torch: {exc}"
        ) from exc


def resolve_encoder_kwargs(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The stored ``encoder_kwargs`` as timm arguments: a ``*_layer`` string naming a timm/torch.nn layer becomes it."""
    return {
        k: _layer(k, v) if k.endswith("_layer") and isinstance(v, str) else v
        for k, v in (kwargs or {}).items()
    }


class _LoadReport(logging.Handler):
    """Collects the keys timm reports as missing or unexpected when it loads pretrained weights non-strictly."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.keys: dict[str, list[str]] = {"missing": [], "unexpected": []}

    def emit(self, record: logging.LogRecord) -> None:
        m = re.match(r"(Missing|Unexpected) keys \((.*?)\) (?:discovered|found)", record.getMessage(), re.S)
        if m:
            self.keys[m.group(1).lower()] += [k.strip() for k in m.group(2).split(",") if k.strip()]


@contextlib.contextmanager
def _load_report():
    """While timm builds a model: the keys its weights loader could not place (timm only logs them)."""
    log = logging.getLogger("timm.models._builder")
    report, level, propagate = _LoadReport(), log.level, log.propagate
    log.addHandler(report)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield report.keys
    finally:
        log.removeHandler(report)
        log.setLevel(level)
        log.propagate = propagate


def _misfit(
    name: str, keys: dict[str, list[str]], cfg: Mapping[str, Any], weights: Any
) -> RuntimeError | None:
    """An error when pretrained weights left parameters of the encoder unset or had parameters it lacks."""
    heads: tuple[str, ...] = ()
    arch_cfg = None
    with contextlib.suppress(Exception):
        arch_cfg = timm.models.get_pretrained_cfg(_architecture(name))
    # the classifier is not loaded (num_classes=0, or cut off by features_only, whose cfg no longer names it)
    for c in (cfg.get("classifier"), getattr(arch_cfg, "classifier", None)):
        heads += (c,) if isinstance(c, str) else tuple(c or ())
    missing = [k for k in keys["missing"] if not k.startswith(tuple(f"{h}." for h in heads))]
    unexpected = [k for k in keys["unexpected"] if not k.startswith(tuple(f"{h}." for h in heads))]
    if not missing and not unexpected:
        return None

    def few(ks: list[str]) -> str:
        return ", ".join(ks[:6]) + (f", … ({len(ks)} in all)" if len(ks) > 6 else "")

    what = (
        f"The weights file {os.fspath(weights)} does" if weights is not None else "The pretrained weights do"
    )
    return RuntimeError(
        f"{what} not fit encoder {name!r}: "
        + "; ".join(
            t
            for t in (
                f"parameters the weights lack (left at random): {few(missing)}" if missing else "",
                f"weights the encoder has no place for (dropped): {few(unexpected)}" if unexpected else "",
            )
            if t
        )
        + ". The architecture that `encoder` and `encoder_kwargs` build must be the one the weights were trained "
        "with (e.g. UNI needs encoder_kwargs={'init_values': 1e-5} for its LayerScale weights); the arguments of "
        "pathology foundation models are in the docs' encoders page."
    )


def _source(name: str) -> tuple[str | None, str]:
    """The ``(source, id)`` of a timm model name: ``("hf-hub", "org/repo")``, ``("local-dir", path)`` or ``(None, name)``."""
    prefix, sep, rest = name.partition(":")
    if sep and prefix.lower() in ("hf-hub", "hf_hub"):
        return "hf-hub", rest
    if sep and prefix.lower() == "local-dir":
        return "local-dir", rest
    return None, name


def _architecture(name: str) -> str:
    """The timm architecture a name builds (read from the folder's or the hub's ``config.json`` for prefixed names)."""
    source, model_id = _source(name)
    try:
        if source == "local-dir":
            return str(json.loads((Path(model_id) / "config.json").read_text())["architecture"])
        if source == "hf-hub":
            return str(timm.models.load_model_config_from_hf(model_id)[1])
    except Exception:  # unreadable or unreachable config: timm raises the real error when it builds the model
        return model_id
    return timm.models.split_model_name_tag(model_id)[0]


def _is_vit(name: str) -> bool:
    """A plain Vision Transformer (timm's ``vision_transformer``, ``deit`` or ``eva`` families): one stride."""
    arch = _architecture(name)
    try:
        family = timm.models.model_entrypoint(arch).__module__.rsplit(".", 1)[-1]
    except Exception:
        family = ""
    return (
        family in ("vision_transformer", "deit", "eva")
        or "vit" in arch.split("_")[0]
        or arch.startswith(("vit", "deit", "eva", "uni"))
    )


def hub_weights(name: str) -> str:
    """Where timm fetches the pretrained weights of ``name``: a Hugging Face Hub id or a URL ('' if unknown)."""
    source, model_id = _source(name)
    if source == "hf-hub":
        return model_id
    if source is not None:
        return ""
    try:
        cfg = timm.models.get_pretrained_cfg(model_id)
    except Exception:
        return ""
    return (getattr(cfg, "hf_hub_id", "") or getattr(cfg, "url", "") or "") if cfg is not None else ""


@functools.lru_cache(maxsize=64)
def pretrained_available(name: str) -> tuple[bool, str]:
    """Whether the pretrained weights timm has for ``name`` can be had here, and if not, why (``(ok, reason)``).

    Found in the Hugging Face cache (or torch's hub cache for URL weights), or downloaded into it now when the
    network may be used (``HF_HUB_OFFLINE`` unset); timm then loads them from the cache. Names with a ``hf-hub:``
    or ``local-dir:`` prefix name their source themselves and count as available (building them says what is
    wrong). Asked once per name and process.
    """
    source, model_id = _source(name)
    if source is not None:
        return True, ""
    try:
        cfg = timm.models.get_pretrained_cfg(model_id)
    except Exception:
        cfg = None
    if cfg is None:
        return False, f"timm knows no pretrained weights for {name!r}"
    hub_id = getattr(cfg, "hf_hub_id", "") or ""
    url = getattr(cfg, "url", "") or ""
    if hub_id:
        from huggingface_hub import hf_hub_download

        errors = []
        # offline, unreachable or not in the repository: try the next file, then give up
        for filename in ("model.safetensors", "pytorch_model.bin"):
            try:
                hf_hub_download(hub_id, filename)
                return True, ""
            except Exception as exc:
                errors.append(f"{filename}: {type(exc).__name__}")
        return (
            False,
            f"{hub_id} is neither in the Hugging Face cache nor downloadable here ({'; '.join(errors)})",
        )
    if url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        if cached.is_file():
            return True, ""
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            return False, f"{url} is not in torch's hub cache and HF_HUB_OFFLINE is set"
        try:
            torch.hub.download_url_to_file(url, os.fspath(cached), progress=False)
            return True, ""
        except Exception as exc:
            return False, f"{url} could not be downloaded ({type(exc).__name__})"
    return False, f"timm names no source for the pretrained weights of {name!r}"


def random_init_message(name: str, reason: str) -> str:
    """The warning for an encoder that starts from random weights because its pretrained ones could not be had."""
    where = hub_weights(name)
    if where.startswith(("http://", "https://")):
        get = f"download {where} and pass `encoder_weights='path/to/{where.rsplit('/', 1)[-1]}'`"
    elif where:
        get = (
            f"download https://huggingface.co/{where} (its model.safetensors) where there is network and pass "
            "`encoder_weights='path/to/model.safetensors'`, or run once with network to cache it"
        )
    else:
        get = "pass `encoder_weights='path/to/weights'` with weights for this architecture"
    return (
        f"Encoder {name!r} starts from a random initialisation: its pretrained weights could not be had ({reason}). "
        f"Random features predict expression less well. To use pretrained weights, {get}; "
        "`pretrained=False` (CLI: --no-pretrained) asks for random weights and silences this warning."
    )


def _weights_error(name: str, exc: Exception, weights: str | os.PathLike | None = None) -> RuntimeError:
    if weights is not None:
        return RuntimeError(
            f"Could not load the weights file {os.fspath(weights)} into encoder {name!r}: {type(exc).__name__}: {exc}\n"
            "The file's weights must fit the architecture that `encoder` and `encoder_kwargs` build (missing or "
            "unexpected keys, or other shapes, mean another architecture: e.g. UNI needs "
            "encoder_kwargs={'init_values': 1e-5} for its LayerScale weights). The arguments of pathology foundation "
            "models are in the docs' encoders page."
        )
    where = hub_weights(name)
    source, model_id = _source(name)
    if source == "local-dir":
        return RuntimeError(
            f"Could not build encoder {name!r} from the folder {model_id}: {type(exc).__name__}: {exc}\n"
            "A 'local-dir:' encoder needs the folder's config.json and its weights (model.safetensors or "
            "pytorch_model.bin), as downloaded from the model's Hugging Face repository."
        )
    if where.startswith(("http://", "https://")):
        get = f"download {where} where there is network and pass `encoder_weights='path/to/{where.rsplit('/', 1)[-1]}'`"
    elif where:
        get = (
            f"download them where there is network (https://huggingface.co/{where}, the file model.safetensors, or "
            f"`huggingface_hub.hf_hub_download({where!r}, 'model.safetensors')`), copy the file here and pass "
            "`encoder_weights='path/to/model.safetensors'`"
        )
    else:
        get = "download the weights where there is network and pass `encoder_weights='path/to/weights.safetensors'`"
    return RuntimeError(
        f"Could not load pretrained weights for encoder {name!r}"
        + (f" ({where})" if where else "")
        + f": {type(exc).__name__}: {exc}\n"
        "Fetching them needs network access (and HF_HUB_OFFLINE unset); `tl.train(preset='paper')` (and "
        "preset='auto' on a CUDA machine) asks for them. Two fixes:\n"
        f"  1. {get} (a state dict or timm checkpoint, .pth/.bin/.safetensors);\n"
        "  2. or start from a random initialisation with `pretrained=False`."
    )


class Encoder(nn.Module):
    """A timm backbone that returns a feature pyramid (finest first).

    Parameters
    ----------
    name
        Any timm model name, including ``"hf-hub:org/repo"`` and ``"local-dir:/path/to/folder"`` (a
        downloaded Hugging Face repository with its ``config.json``). CNNs use ``features_only=True``;
        plain Vision Transformers (timm's ``vision_transformer``, ``deit`` and ``eva`` families) get a
        :class:`ViTPyramid`.
    pretrained
        Load the pretrained weights timm knows for ``name`` (from the Hugging Face Hub, which needs
        network access, or from a ``local-dir:`` folder).
    weights
        Path to a local weights file (state dict or timm checkpoint) to load instead of the hub's.
    out_indices
        Which CNN stages to return (default: all).
    **timm_kwargs
        Passed to :func:`timm.create_model` (e.g. ``init_values=1e-5`` for UNI); a ``*_layer`` given
        as a string naming a timm or torch.nn layer (``"timm.layers.SwiGLUPacked"``) is that layer
        (:func:`resolve_encoder_kwargs`). ``pretrained_cfg_overlay={"mean": ..., "std": ...}`` sets
        the input normalisation.

    Attributes
    ----------
    weights_source
        Where the initial weights came from, as JSON values: ``{"source": "hf-hub", "hf_hub_id": ...,
        "url": ...}``, ``{"source": "file", "path": ...}``, ``{"source": "local-dir", "path": ...}``,
        ``{"source": "url", "url": ...}``, or ``{"source": "random"}``.

    """

    def __init__(
        self,
        name: str = "resnet18",
        *,
        pretrained: bool = False,
        weights: str | os.PathLike | None = None,
        out_indices: Sequence[int] | None = None,
        **timm_kwargs,
    ) -> None:
        super().__init__()
        self.name = name
        kwargs: dict = resolve_encoder_kwargs(encoder_kwargs_config(timm_kwargs))
        source, model_id = _source(name)
        if weights is not None:
            weights = check_file(
                weights,
                "Encoder weights file",
                expected="a weights file (.safetensors, .pth, .pt or .bin) for the encoder's architecture",
            )
            check_weights_file(weights, "The encoder weights file")
            if source is not None:
                raise ValueError(
                    f"encoder_weights= loads a weights file into a timm architecture, but the encoder {name!r} "
                    f"takes its weights from its {source} source; name the architecture instead (e.g. "
                    "encoder='vit_large_patch16_224' with its encoder_kwargs), or use pretrained=True."
                )
            kwargs["pretrained_cfg_overlay"] = {
                **kwargs.get("pretrained_cfg_overlay", {}),
                "file": os.fspath(weights),
            }
            pretrained = True
        self.is_vit = _is_vit(name)
        try:
            with _load_report() as load_keys:
                self._create(name, pretrained, kwargs, out_indices)
        except Exception as exc:  # timm / huggingface_hub raise many error types for unreachable weights
            if pretrained or source is not None:
                raise _weights_error(name, exc, weights) from exc
            raise
        cfg = getattr(self.body, "pretrained_cfg", None) or getattr(
            getattr(self.body, "vit", None), "pretrained_cfg", {}
        )
        if pretrained and (err := _misfit(name, load_keys, cfg, weights)) is not None:
            raise err
        self.mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        self.register_buffer("pixel_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        if weights is not None:
            self.weights_source: dict[str, Any] = {
                "source": "file",
                "path": os.fspath(Path(weights).resolve()),
            }
        elif not pretrained:
            self.weights_source = {"source": "random"}
        elif source == "local-dir":
            self.weights_source = {"source": "local-dir", "path": os.fspath(Path(model_id).resolve())}
        elif cfg.get("hf_hub_id") or source == "hf-hub":
            hub_id = model_id if source == "hf-hub" else str(cfg["hf_hub_id"])
            self.weights_source = {
                "source": "hf-hub",
                "hf_hub_id": hub_id,
                "url": f"https://huggingface.co/{hub_id}",
            }
        else:
            self.weights_source = {"source": "url", "url": str(cfg.get("url", ""))}

    def _create(self, name: str, pretrained: bool, kwargs: dict, out_indices: Sequence[int] | None) -> None:
        """Build the timm model: a :class:`ViTPyramid` around a ViT, or a CNN with ``features_only``."""
        if self.is_vit:
            kwargs.setdefault("dynamic_img_size", True)
            vit = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
            self.body: nn.Module = ViTPyramid(vit)
            self.channels = list(self.body.channels)
            self.reductions = list(self.body.reductions)
        else:
            if out_indices is not None:
                kwargs["out_indices"] = tuple(out_indices)
            self.body = timm.create_model(name, pretrained=pretrained, features_only=True, **kwargs)
            self.channels = list(self.body.feature_info.channels())
            self.reductions = list(self.body.feature_info.reduction())

    @property
    def stride(self) -> int:
        """Coarsest reduction of the pyramid; :meth:`pyramid` pads inputs to a multiple of it."""
        return int(max(self.reductions))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float RGB ``(B, 3, H, W)`` → the encoder's normalised input."""
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 255.0
        return (x - self.pixel_mean) / self.pixel_std

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature pyramid of *normalised* images (see :meth:`normalize`), finest first."""
        return list(self.body(x))

    def pyramid(self, images: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """Features of RGB images of any size: normalised, reflect-padded to the stride, encoded.

        Returns
        -------
        ``(features, (H, W))``: the pyramid (finest first) and the padded input size.

        """
        h, w = images.shape[-2:]
        s = self.stride
        ph, pw = (-h) % s, (-w) % s
        x = self.normalize(images)  # before padding: normalize() needs to see the uint8 dtype
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        return self(x), (h + ph, w + pw)


def as_encoder(
    encoder: str | Encoder,
    *,
    pretrained: bool = False,
    weights: str | os.PathLike | None = None,
    encoder_kwargs: Mapping[str, Any] | None = None,
) -> Encoder:
    """``encoder`` itself when it is an :class:`Encoder`, else the timm model of that name."""
    if isinstance(encoder, Encoder):
        return encoder
    return Encoder(encoder, pretrained=pretrained, weights=weights, **(encoder_kwargs or {}))
