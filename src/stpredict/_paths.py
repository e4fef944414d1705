"""The checks of the paths users pass, with nothing but the standard library (so the CLI runs them at once).

A misspelt path says it does not exist (with the near names beside it), a folder where a file is expected says so,
and the reverse; :func:`check_checkpoint_dir` and :func:`check_zarr_store` name what a model folder or a
SpatialData store must hold. :mod:`stpredict._core._files` re-exports these beside the checks that read files.
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "StoreRefused",
    "check_checkpoint_dir",
    "check_dir",
    "check_file",
    "check_files",
    "check_zarr_store",
]

_LISTED = 8  # names shown when a folder's content is listed
#: The files of a model checkpoint folder (``model.save``).
CHECKPOINT_CONFIG = "config.json"
CHECKPOINT_WEIGHTS = "weights.pt"


class StoreRefused(ValueError):
    """A write the store rules refuse (docs/safety.md); nothing was changed. The command line exits with status 2."""


def _q(path: Path) -> str:
    return repr(str(path))


def _first(what: str) -> str:
    return what[:1].upper() + what[1:]


def _names(folder: Path, limit: int = 10_000) -> list[str]:
    with contextlib.suppress(OSError), os.scandir(folder) as it:
        return sorted(e.name for e in itertools.islice(it, limit))
    return []


def _listing(folder: Path) -> str:
    names = _names(folder)
    if not names:
        return " It is empty."
    more = f", … ({len(names)} in all)" if len(names) > _LISTED else ""
    return f" It holds {', '.join(names[:_LISTED])}{more}."


def _nearby(path: Path) -> str:
    """Where a path that does not exist stops existing, and the near names there (a typo's likely fix)."""
    path = Path(os.path.abspath(path))
    parent = path.parent
    if parent.is_dir():
        close = difflib.get_close_matches(path.name, _names(parent), n=3, cutoff=0.6)
        if close:
            return f" Did you mean {' or '.join(repr(str(parent / c)) for c in close)}?"
        return ""
    for ancestor in path.parents:
        if ancestor.is_dir():
            missing = ancestor / path.relative_to(ancestor).parts[0]
            return f" (The folder {str(ancestor)!r} exists, but holds no {missing.name!r}.)"
    return ""


def check_file(path: str | os.PathLike, what: str, *, expected: str = "") -> Path:
    """``path`` as a :class:`~pathlib.Path` when it is an existing file; else an error that says what it is.

    Parameters
    ----------
    path
        The path a user passed.
    what
        What the file is, e.g. ``"Slide file"``; the message starts with it.
    expected
        What file is expected, e.g. ``"the slide (.svs, .tif, .ndpi, …)"``.

    Raises
    ------
    FileNotFoundError
        When nothing is at ``path`` (the message suggests near names).
    IsADirectoryError
        When ``path`` is a folder.

    """
    p = Path(path)
    if p.is_file():
        return p
    want = f" Expected {expected}." if expected else ""
    if p.is_dir():
        raise IsADirectoryError(f"{_first(what)} {_q(p)} is a folder, not a file.{want}{_listing(p)}")
    raise FileNotFoundError(f"{_first(what)} not found: {_q(p)} does not exist.{_nearby(p)}{want}")


def check_dir(path: str | os.PathLike, what: str, *, expected: str = "") -> Path:
    """``path`` as a :class:`~pathlib.Path` when it is an existing folder; else an error that says what it is.

    Parameters
    ----------
    path
        The path a user passed.
    what
        What the folder is, e.g. ``"Visium folder"``; the message starts with it.
    expected
        What folder is expected, e.g. ``"the Space Ranger `outs/` folder"``.

    Raises
    ------
    FileNotFoundError
        When nothing is at ``path`` (the message suggests near names).
    NotADirectoryError
        When ``path`` is a file.

    """
    p = Path(path)
    if p.is_dir():
        return p
    want = f" Expected {expected}." if expected else ""
    if p.exists():
        raise NotADirectoryError(
            f"{_first(what)} {_q(p)} is a file, not a folder.{want} Pass the folder, not a file in it."
        )
    raise FileNotFoundError(f"{_first(what)} not found: {_q(p)} does not exist.{_nearby(p)}{want}")


def check_files(
    files: Mapping[str, str | os.PathLike],
    what: str,
    hint: str = "",
    *,
    expected: Mapping[str, str] | None = None,
) -> None:
    """Check several files at once: one error lists every expected file and which are missing or folders.

    Parameters
    ----------
    files
        ``{name: path}``.
    what
        Who reads them, e.g. ``"read_st"``; the message starts with it.
    hint
        Appended to the message (how to fix it).
    expected
        ``{name: what that file should be}`` for the names that need saying.

    Raises
    ------
    FileNotFoundError
        When a file is missing (folders among them are marked too).
    IsADirectoryError
        When none is missing but one is a folder.

    """
    expected = expected or {}
    paths = {k: Path(p) for k, p in files.items()}
    folders = {k for k, p in paths.items() if p.is_dir()}
    missing = {k for k, p in paths.items() if not p.exists()}
    if not folders and not missing:
        return

    def line(k: str) -> str:
        want = f" (expected {expected[k]})" if k in expected else ""
        if k in missing:
            return f"  MISSING {k}: {paths[k]}{want}"
        if k in folders:
            return f"  FOLDER  {k}: {paths[k]} is a folder, not a file{want}"
        return f"  found   {k}: {paths[k]}"

    listing = "\n".join(line(k) for k in paths)
    head = []
    if missing:
        head.append(f"{len(missing)} of {len(paths)} expected file(s) missing")
    if folders:
        head.append(f"{len(folders)} of {len(paths)} is a folder, not a file")
    err = FileNotFoundError if missing else IsADirectoryError
    raise err(f"{what}: {'; '.join(head)}.\n{listing}{hint}")


def check_checkpoint_dir(path: str | os.PathLike) -> Path:
    """``path`` when it is a model checkpoint folder (``config.json`` and ``weights.pt``); else an error saying why.

    Raises
    ------
    FileNotFoundError
        When nothing is at ``path`` ("does not exist", with near names), or the folder lacks the two files.
    NotADirectoryError
        When ``path`` is a file.

    """
    p = check_dir(
        path,
        "Model checkpoint folder",
        expected=f"a folder written by `model.save(path)`, holding {CHECKPOINT_CONFIG} and {CHECKPOINT_WEIGHTS}",
    )
    if not (p / CHECKPOINT_CONFIG).is_file() or not (p / CHECKPOINT_WEIGHTS).is_file():
        raise FileNotFoundError(
            f"{p} is not an stpredict checkpoint: expected {CHECKPOINT_CONFIG} and {CHECKPOINT_WEIGHTS} in it."
            f"{_listing(p)}"
        )
    return p


def check_zarr_store(path: str | os.PathLike) -> Path:
    """``path`` when it is a zarr store (a folder with ``zarr.json`` or ``.zgroup``); else an error saying why.

    Raises
    ------
    FileNotFoundError
        When nothing is at ``path`` ("does not exist", with near names).
    ValueError
        When ``path`` is a file or a folder that is not a zarr store.

    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"no SpatialData zarr store at {str(p)!r}: the path does not exist.{_nearby(p)}"
        )
    if not p.is_dir() or not ((p / "zarr.json").is_file() or (p / ".zgroup").is_file()):
        raise ValueError(
            f"{str(p)!r} is not a SpatialData zarr store (a folder with zarr.json); write one with "
            "`stpredict read-st ... --out x.zarr` or `sdata.write('x.zarr')`."
        )
    return p
