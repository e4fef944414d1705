"""The checks of every path a user passes: each error names the path, what is wrong with it and the fix.

- :func:`check_file` / :func:`check_dir` / :func:`check_files` (from :mod:`stpredict._paths`, standard library
  only, so the CLI checks paths before the heavy imports): a misspelt path says it does not exist (with the near
  names beside it), a folder where a file is expected says so, and the reverse;
- :func:`read_json`, :func:`check_hdf5`, :func:`check_parquet`, :func:`check_image`, :func:`check_tiff`,
  :func:`check_weights_file`: cheap reads that find a truncated or corrupt file when it is opened (not later,
  inside a decoder, with a message that does not name it); :func:`corrupt_file_error` is their error.

Truncation is found from the file's own structure (a TIFF's tile offsets, a PNG's end chunk, a JPEG's end
marker, an HDF5 superblock's end-of-file address, a Parquet footer, a safetensors header); an image is decoded
only when its end is not where it should be.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import struct
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._constants import TIFF_SUFFIXES
from .._paths import _first, _q, check_dir, check_file, check_files

__all__ = [
    "RECOPY",
    "check_dir",
    "check_file",
    "check_files",
    "check_hdf5",
    "check_image",
    "check_parquet",
    "check_tiff",
    "check_weights_file",
    "corrupt_file_error",
    "ends_mid_line",
    "exception_summary",
    "read_json",
    "tiff_truncation",
    "tifffile_messages",
]

#: The fix for a truncated or corrupt file, unless a caller knows better where the file came from.
RECOPY = "Copy or download it again: a transfer or a disk that filled up part-way leaves such files."

_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
#: What tifffile logs when a read stops at the end of the file (an IFD or a tag list cut short).
_SHORT_READ = ("corrupted IFD structure", "unpack requires a buffer")


# --- truncated and corrupt files ---------------------------------------------------------------


def exception_summary(exc: BaseException) -> str:
    """An exception in one line for a message: its type and the first line of its text."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__


def corrupt_file_error(
    path: str | os.PathLike, what: str, reason: str | BaseException, *, fix: str = RECOPY
) -> ValueError:
    """The error for a file that cannot be read: its name, why, and what to do (raise it ``from`` the cause).

    Parameters
    ----------
    path
        The file.
    what
        What it is, e.g. ``"The counts matrix"``.
    reason
        What is wrong, or the exception the reading library raised (its type and first line are quoted).
    fix
        How to get a good copy.

    """
    if isinstance(reason, BaseException):
        reason = exception_summary(reason)
    return ValueError(f"{_first(what)} {_q(Path(path))} looks truncated or corrupt ({reason}). {fix}")


def read_json(path: str | os.PathLike, what: str, *, fix: str = RECOPY) -> Any:
    """The JSON value in ``path``; a file that does not parse is reported as truncated or corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise corrupt_file_error(path, what, f"not valid JSON: {exc}", fix=fix) from exc


def ends_mid_line(path: str | os.PathLike) -> bool:
    """Whether an uncompressed text file ends without a line break, as one cut short mid-line does.

    Compressed files (``.gz``, ``.bz2``, ``.zip``, ``.xz``, ``.zst``) give ``False``: a cut one does not decompress.
    """
    path = Path(path)
    if path.suffix.lower() in (".gz", ".bz2", ".zip", ".xz", ".zst", ".tar"):
        return False
    tail = _tail(path, 1)
    return bool(tail) and tail not in (b"\n", b"\r")


def check_hdf5(path: str | os.PathLike, what: str, *, fix: str = RECOPY) -> None:
    """Open an HDF5 file (``.h5``, ``.h5ad``): HDF5 checks its signature and its end-of-file address."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r"):
            pass
    except OSError as exc:
        raise corrupt_file_error(path, what, exc, fix=fix) from exc


def check_parquet(path: str | os.PathLike, what: str, *, fix: str = RECOPY) -> None:
    """Read a Parquet file's footer (its schema and row groups), which a truncated file has lost."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        pq.ParquetFile(path).close()
    except (pa.ArrowException, OSError) as exc:
        raise corrupt_file_error(path, what, exc, fix=fix) from exc


@contextlib.contextmanager
def tifffile_messages() -> Iterator[list[str]]:
    """Collect what tifffile logs while a file is opened: it reports offsets past the end of a file there.

    The messages still reach tifffile's handlers as before.
    """
    seen: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        seen.append(record.getMessage())
        return True

    log = logging.getLogger("tifffile")
    log.addFilter(keep)
    try:
        yield seen
    finally:
        log.removeFilter(keep)


def tiff_truncation(pages: Iterable[Any], size: int, messages: Iterable[str] = ()) -> str | None:
    """Why a TIFF is cut short, or ``None``: a tile, strip or tag value (or, as tifffile logged, an IFD) past its end.

    Parameters
    ----------
    pages
        tifffile pages (or frames) whose ``dataoffsets`` / ``databytecounts`` are checked; ``None`` is skipped.
    size
        The file's size in bytes.
    messages
        What tifffile logged while opening the file (:func:`tifffile_messages`).

    """
    beyond = total = 0
    cut_tags = []
    for page in pages:
        if page is None:
            continue
        # a page of a multi-file OME-TIFF lies in its own file
        fh = getattr(getattr(page, "parent", None), "filehandle", None)
        end = int(fh.size) if fh is not None and getattr(fh, "size", None) else size
        offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        counts = np.asarray(page.databytecounts, dtype=np.int64)
        present = counts > 0
        total += int(present.sum())
        beyond += int(((offsets + counts > end) & present).sum())
        tags = getattr(page, "tags", None)  # frames share their keyframe's tags
        for tag in tags.values() if tags is not None else ():
            try:
                if tag.valueoffset + tag.valuebytecount > end:
                    cut_tags.append(tag.name)
            except (
                KeyError,
                TypeError,
                ValueError,
            ):  # a tag of a data type tifffile does not know: not ours to judge
                continue
    if beyond:
        return f"{beyond} of {total} image tiles/strips end past its {size:,} bytes"
    if cut_tags:
        return f"the value of tag(s) {', '.join(dict.fromkeys(cut_tags))} ends past its {size:,} bytes"
    for msg in messages:
        # an IFD or a value that starts past the end, or a read cut short (a tag of a page that is not read, e.g. a
        # macro photo's, that merely ends oddly is not taken for truncation)
        numbers = [int(n) for n in re.findall(r"(?:@|offset )(\d+)", msg)]
        # the image description (OME-XML, Aperio's header: where the pixel size is) that ends past the end
        description = re.search(r"TiffTag 270 @\d+> invalid value offset (\d+)", msg)
        if description and int(description.group(1)) >= 8:
            return f"tifffile: {msg.strip()[:200]}"
        if any(n >= size for n in numbers) or any(m in msg for m in _SHORT_READ):
            return f"tifffile: {msg.strip()[:200]}"
    return None


def check_tiff(path: str | os.PathLike, what: str, *, fix: str = RECOPY) -> None:
    """Open a TIFF and check that every tile or strip of its images lies within the file (nothing is decoded)."""
    import tifffile

    path = Path(path)
    try:
        with tifffile_messages() as messages, tifffile.TiffFile(path) as tf:
            pages = [p for s in tf.series for level in s.levels for p in level.pages]
            problem = tiff_truncation(pages, tf.filehandle.size, messages)
    except (tifffile.TiffFileError, ValueError, OSError, struct.error) as exc:
        raise corrupt_file_error(path, what, exc, fix=fix) from exc
    if problem is not None:
        raise corrupt_file_error(path, what, problem, fix=fix)


def _tail(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - n))
        return f.read()


def check_image(path: str | os.PathLike, what: str, *, fix: str = RECOPY) -> None:
    """Check that an image file is whole without decoding it: TIFF tile offsets, PNG end chunk, JPEG end marker.

    A PNG or JPEG whose end is not where it should be (a file with bytes appended is legal) is decoded —
    a JPEG at 1/8 scale — to tell a truncated file from one with a trailer. Other formats get their header read.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        check_tiff(path, what, fix=fix)
        return
    Image.MAX_IMAGE_PIXELS = None  # whole-slide H&E images are legitimately large
    try:
        with Image.open(path) as im:
            fmt = im.format
            if fmt == "TIFF":
                complete = None
            elif fmt == "PNG":
                complete = _tail(path, len(_PNG_END)) == _PNG_END
            elif fmt == "JPEG":
                complete = b"\xff\xd9" in _tail(path, 64)
            else:
                complete = True
            if complete is False:  # decode to know: truncated, or a legal trailer after the end
                if fmt == "JPEG":
                    im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error) as exc:
        raise corrupt_file_error(path, what, exc, fix=fix) from exc
    if complete is None:  # a TIFF under another suffix
        check_tiff(path, what, fix=fix)


def check_weights_file(path: str | os.PathLike, what: str, *, fix: str = RECOPY) -> None:
    """Check that a weights file is whole: a safetensors header that its data covers, or a complete zip archive.

    ``torch.save`` writes zip archives (their directory is at the end: a truncated one has lost it); safetensors
    files start with the length of a JSON header that gives every tensor's byte range. Other files pass.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if path.suffix.lower() == ".safetensors":
            if len(head) < 8:
                raise corrupt_file_error(path, what, f"only {size} bytes", fix=fix)
            (n,) = struct.unpack("<Q", head)
            if 8 + n > size:
                raise corrupt_file_error(
                    path, what, f"its header needs {8 + n:,} bytes, the file has {size:,}", fix=fix
                )
            try:
                header = json.loads(f.read(n))
                end = max(
                    (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0
                )
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
                raise corrupt_file_error(
                    path, what, f"unreadable safetensors header: {exc}", fix=fix
                ) from exc
            if 8 + n + end > size:
                raise corrupt_file_error(
                    path, what, f"its tensors need {8 + n + end:,} bytes, the file has {size:,}", fix=fix
                )
            return
    if head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(path):
        raise corrupt_file_error(path, what, "a zip archive (torch.save) without its end directory", fix=fix)
