"""Local loader for the HER2ST legacy ST sections (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from spatialdata import SpatialData

from .._core._files import check_files
from .._settings import settings
from ..io._st import read_st

__all__ = ["HER2ST_SECTIONS", "her2st", "her2st_dir"]

#: The sections of patient C shipped in the project's shared data folder.
HER2ST_SECTIONS = ("C2", "C3", "C4", "C5")
_ENV = "STPREDICT_HER2ST_DIR"


def her2st_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding HER2ST files.

    Resolution order: ``data_dir``; the ``STPREDICT_HER2ST_DIR`` environment variable;
    ``settings.datasetdir / "her2st"``.

    Parameters
    ----------
    data_dir
        An explicit folder (returned as is).

    """
    return local_dir(data_dir, _ENV, "her2st")


def local_dir(data_dir: str | os.PathLike | None, env: str, name: str) -> Path:
    """A local dataset folder: ``data_dir``, else the environment variable ``env``, else ``settings.datasetdir / name``.

    A file there (where the folder of the files is expected) is an error; a folder that does not exist is not (the
    loaders list the files they miss).
    """
    if data_dir is not None:
        path, source = Path(data_dir), "`data_dir`"
    elif os.environ.get(env):
        path, source = Path(os.environ[env]), f"${env}"
    else:
        path, source = Path(settings.datasetdir) / name, "`settings.datasetdir`"
    if path.is_file():
        raise NotADirectoryError(
            f"{source} {str(path)!r} is a file, not a folder. Expected the folder that holds the {name} files."
        )
    return path


def her2st_files(section: str, data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Paths of the three files of one section (``{S}_counts.tsv.gz``, ``{S}_spots.tsv``, ``{S}_HE.jpg``)."""
    d = her2st_dir(data_dir)
    return {
        "counts": d / f"{section}_counts.tsv.gz",
        "spots": d / f"{section}_spots.tsv",
        "image": d / f"{section}_HE.jpg",
    }


def her2st(section: str, *, data_dir: str | os.PathLike | None = None, **kwargs: Any) -> SpatialData:
    """Load one HER2ST section (Andersson et al., Nat. Commun. 12, 6012, 2021) from a local folder.

    The folder holds, per section ``S``: ``S_counts.tsv.gz`` (spots × genes UMI counts),
    ``S_spots.tsv`` (``x y new_x new_y pixel_x pixel_y selected``) and ``S_HE.jpg`` (H&E at about
    0.69 µm/px). Nothing is downloaded. Cite the paper when you use the data.

    Parameters
    ----------
    section
        Section name, e.g. ``"C2"``; also used as ``dataset_id`` (element prefix and coordinate
        system names ``"C2"`` / ``"C2_um"``).
    data_dir
        Folder with the files. Default: ``$STPREDICT_HER2ST_DIR``, else ``settings.datasetdir / "her2st"``.
    **kwargs
        Passed to :func:`stpredict.io.read_st` (e.g. ``downsample=4``, ``mpp=``).

    Returns
    -------
    The section as returned by :func:`stpredict.io.read_st`: ``images["{S}_full_image"]``,
    ``shapes["{S}_spots"]`` and ``tables["spots"]``.

    """
    files = her2st_files(section, data_dir)
    folder = her2st_dir(data_dir)
    check_files(
        files,
        f"HER2ST section {section!r} in {folder}",
        hint=(
            ("" if folder.is_dir() else f"\nThe folder {folder} does not exist.")
            + "\nPass `data_dir=` or set STPREDICT_HER2ST_DIR to the folder with the HER2ST files "
            "(github.com/almaan/her2st; stpredict downloads nothing)."
        ),
    )
    kwargs.setdefault("dataset_id", section)
    return read_st(files["counts"], files["spots"], files["image"], **kwargs)
