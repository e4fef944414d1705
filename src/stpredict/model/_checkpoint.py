"""Checkpoint files: reading a ``config.json`` and the weights with clear errors, and the record of encoder weights."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .._core import file_sha256

_CONFIG = "config.json"

__all__ = ["encoder_weights_info", "read_config"]


def encoder_weights_info(path: str | os.PathLike) -> dict[str, Any]:
    """Path and checksum of an encoder weights file, with its pretraining record when it has one.

    Weights written by :func:`stpredict.tl.pretrain_encoder` have a ``{path}.json`` beside them; its
    settings and last loss are included when the checksum matches.
    """
    path = Path(path)
    info: dict[str, Any] = {"source": "file", "path": os.fspath(path.resolve()), "sha256": file_sha256(path)}
    meta = Path(f"{path}.json")
    if meta.is_file():
        try:
            m = json.loads(meta.read_text())
        except json.JSONDecodeError:
            m = {}
        if m.get("sha256") == info["sha256"]:
            info["pretraining"] = {**m.get("config", {}), "history": m.get("history", [])[-1:]}
    return info


def _torch_load(path: Path, *, weights_only: bool, fix: str) -> Any:
    """``torch.load`` of a checkpoint file, with an error naming the file when it cannot be read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # torch raises many kinds for a damaged file (EOF, pickle, zip)
        from .._core._files import exception_summary

        raise ValueError(
            f"{path} cannot be read: it is truncated or corrupt ({exception_summary(exc)}). {fix}"
        ) from exc


def _is_checkpoint(path: Path) -> bool:
    """Whether the folder ``path`` holds a ``config.json`` that stpredict wrote (damaged weights or not)."""
    try:
        config = json.loads((path / _CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "stpredict_version" in config and "format" in config


def read_config(path: str | os.PathLike) -> dict:
    """The ``config.json`` of a checkpoint folder, with clear errors for what is not one."""
    from .._paths import check_checkpoint_dir

    cfg_path = check_checkpoint_dir(path) / _CONFIG
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{cfg_path} is not valid JSON (truncated or corrupted checkpoint): {exc}") from exc
    if not isinstance(config, dict):
        raise ValueError(
            f"{cfg_path} holds a JSON {type(config).__name__}, not the object stpredict writes: it is not an "
            "stpredict checkpoint's config, or it was overwritten. Save the model again."
        )
    return config
