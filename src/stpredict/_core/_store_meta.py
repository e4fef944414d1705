"""What a SpatialData store says about itself, and the files stpredict keeps in it.

The provenance registry (which elements stpredict wrote, by which call), the elements and root attributes of a store
read without spatialdata, atomic JSON files, the owner and lock files of transactions, scratch folders, and the
consolidated metadata. :mod:`stpredict._core._store` builds its transactions on these.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from spatialdata import SpatialData

from .._logging import logger

HIDDEN_DIR = ".stpredict"


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (checkpoint and weights checksums)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_ATTRS_KEY = "stpredict"
_WRITTEN_KEY = "written"
_ELEMENT_TYPES = ("images", "labels", "points", "shapes", "tables")


# --------------------------------------------------------------------------------------------------- provenance
def written_elements(sdata: SpatialData) -> dict[str, dict]:
    """The provenance registry: the elements stpredict wrote into ``sdata``.

    Parameters
    ----------
    sdata
        A SpatialData (in memory or read from zarr; the registry lives in ``sdata.attrs["stpredict"]["written"]``
        and is saved in the store's root metadata).

    Returns
    -------
    ``{name: {"type": element type, "by": function, "stpredict_version": ..., "time": UTC ISO time}}``. Only these
    elements can be replaced by an stpredict function with ``overwrite=True``.

    """
    reg = (sdata.attrs or {}).get(_ATTRS_KEY, {})
    written = reg.get(_WRITTEN_KEY, {}) if isinstance(reg, dict) else {}
    return dict(written) if isinstance(written, dict) else {}


def _element_type(sdata: SpatialData, name: str) -> str | None:
    for t in _ELEMENT_TYPES:
        if name in getattr(sdata, t):
            return t
    return None


def _merge_registry(
    record: Any, written: dict[str, Any], removed: Sequence[str], attrs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``attrs["stpredict"]`` record with ``removed`` dropped from, and ``written`` added to, its registry.

    ``attrs`` are further keys of the record (e.g. ``"slide"``) set in the same step.
    """
    reg = {**dict(record or {}), **(attrs or {})}
    reg[_WRITTEN_KEY] = {
        **{k: v for k, v in dict(reg.get(_WRITTEN_KEY) or {}).items() if k not in removed},
        **written,
    }
    return reg


def check_new_names(
    sdata: SpatialData,
    names: Sequence[str],
    overwrite: bool,
    *,
    own: Sequence[str] = (),
    adopt: Sequence[str] = (),
) -> list[str]:
    """Check that ``names`` may be written; return those that will be replaced. Deletes nothing.

    An existing name — in ``sdata`` or, when ``sdata`` is backed by zarr, in its store on disk — is refused unless
    ``overwrite=True`` and stpredict wrote that element (it is in :func:`written_elements` of ``sdata`` or of the
    store with the same element type): stpredict never replaces the user's own data. ``own`` names elements the
    caller itself placed in ``sdata`` to be written (e.g. an image read lazily from a slide file): only the store is
    checked for those. ``adopt`` names elements the caller knows stpredict wrote without a registry record (a store of
    stpredict 0.1); they are recorded when the write commits.
    """
    dup = sorted(n for n, k in Counter(names).items() if k > 1)
    if dup:
        raise ValueError(f"The output names {dup} would be written twice; choose distinct names.")
    store = _backing_store(sdata)
    on_disk = store_elements(store) if store is not None else {}

    def type_of(n: str) -> str | None:
        if n not in own and n in sdata:
            return _element_type(sdata, n)
        return on_disk.get(n)

    existing = [n for n in names if type_of(n) is not None]
    if not existing:
        return []
    if not overwrite:
        raise ValueError(
            f"Element(s) {existing} already exist; pass `overwrite=True` to replace them, or choose another `key_added`."
        )
    in_memory = written_elements(sdata)
    on_store = store_registry(store) if store is not None else {}

    def record(n: str) -> dict:
        own_or_disk = n in own or n not in sdata
        return (on_store if own_or_disk else in_memory).get(n) or {}

    foreign = [n for n in existing if n not in adopt and record(n).get("type") != type_of(n)]
    if foreign:
        raise ValueError(
            f"Element(s) {foreign} were not written by stpredict (no provenance record in "
            f"`sdata.attrs['stpredict']['written']`), so even `overwrite=True` does not replace them: they may be your "
            "data. Choose another `key_added`, or remove them yourself first (`del sdata[name]`, and "
            "`sdata.delete_element_from_disk(name)` for a store on disk)."
        )
    return existing


def _backing_store(sdata: SpatialData) -> Path | None:
    return Path(sdata.path) if sdata.is_backed() and sdata.path is not None else None


def store_elements(store: str | os.PathLike) -> dict[str, str]:
    """``{name: element type}`` of the elements in a SpatialData zarr store, from its folders (reads no data)."""
    found = {}
    for t in _ELEMENT_TYPES:
        folder = Path(store) / t
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if p.is_dir() and not p.name.startswith("."):
                    found[p.name] = t
    return found


def store_attrs(store: str | os.PathLike) -> dict[str, Any]:
    """The root attributes of a zarr store (v3 ``zarr.json`` or v2 ``.zattrs``); ``{}`` when there are none."""
    root = _read_json(Path(store) / "zarr.json")
    attrs = root.get("attributes") if root is not None else _read_json(Path(store) / ".zattrs")
    return attrs if isinstance(attrs, dict) else {}


def store_registry(store: str | os.PathLike) -> dict[str, dict]:
    """The provenance registry (:func:`written_elements`) as saved in a store's root attributes."""
    reg = store_attrs(store).get(_ATTRS_KEY)
    written = reg.get(_WRITTEN_KEY) if isinstance(reg, dict) else None
    return dict(written) if isinstance(written, dict) else {}


def is_zarr_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder with zarr root metadata (v3 ``zarr.json`` or v2 ``.zgroup``)."""
    p = Path(path)
    return p.is_dir() and ((p / "zarr.json").is_file() or (p / ".zgroup").is_file())


# --------------------------------------------------------------------------------------------------- files
@contextlib.contextmanager
def no_label_colours() -> Iterator[None]:
    """Write labels elements without ome-zarr's per-label colour table, which costs O(labels) time and memory.

    ome-zarr (0.18) builds an ``image-label`` colour entry, a random RGBA, for every distinct value of a labels
    array it writes, and validates them one by one: a bin-id raster of one HER2ST section's 2.5 million 2 µm bins
    took 30 s and 3 GB to write, the 10.6 million bins of a capture area far more. spatialdata neither writes nor
    reads those colours, so inside this block they are not built (the labels' data and multiscales are unchanged).
    """
    try:
        from ome_zarr.classes.image import OMEZarrLabels
    except ImportError:  # another ome-zarr layout: nothing to do
        yield
        return
    original = OMEZarrLabels.__dict__.get("_parse_image_label_metadata")
    if original is None:
        yield
        return
    OMEZarrLabels._parse_image_label_metadata = lambda self: None
    try:
        yield
    finally:
        OMEZarrLabels._parse_image_label_metadata = original


def _atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _pid_alive(owner: dict) -> bool:
    if owner.get("host") != socket.gethostname():
        return True  # another machine's process: never sweep what we cannot check
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_owner(path: Path) -> None:
    _atomic_write_json(path / "owner.json", {"pid": os.getpid(), "host": socket.gethostname()})


def _read_json(path: Path) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _sweep_dead(folder: Path, pattern: str) -> list[str]:
    """Delete the transaction/scratch folders under ``folder`` whose owner process is gone and that did not commit."""
    removed = []
    for p in sorted(folder.glob(pattern)):
        if not p.is_dir() or (p / "journal.json").exists():
            continue
        owner = _read_json(p / "owner.json")
        if owner is not None and _pid_alive(owner):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p.name)
    return removed


@contextlib.contextmanager
def _store_lock(store: Path) -> Iterator[None]:
    """An exclusive lock on the store's ``.stpredict`` folder while a transaction swaps or recovers."""
    hidden = store / HIDDEN_DIR
    hidden.mkdir(exist_ok=True)
    with open(hidden / "lock", "a") as f:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; single-writer stores
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def scratch_dir() -> Path:
    """A scratch folder in the system's temporary folder for in-memory SpatialData, removed at exit.

    Scratch folders of processes that no longer exist (killed runs) are swept on the way.
    """
    import atexit

    base = Path(tempfile.gettempdir())
    swept = _sweep_dead(base, "stpredict-*")
    if swept:
        logger.info(f"Removed {len(swept)} scratch folder(s) left in {base} by interrupted runs.")
    path = Path(tempfile.mkdtemp(prefix="stpredict-", dir=base))
    _write_owner(path)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


# --------------------------------------------------------------------------------------------------- zarr metadata
def _consolidated_file(store: Path) -> tuple[Path, str] | None:
    """The file holding the store's consolidated metadata and its zarr format, or None when it has none."""
    root = _read_json(store / "zarr.json")
    if root is not None:
        return (store / "zarr.json", "v3") if root.get("consolidated_metadata") else None
    if (store / ".zmetadata").exists():
        return store / ".zmetadata", "v2"
    return None


def _drop_from_consolidated(store: Path, prefixes: Sequence[str]) -> None:
    """Remove the entries of elements ``prefixes`` (``"tables/x"``) from the consolidated metadata, atomically."""
    found = _consolidated_file(store)
    if found is None or not prefixes:
        return
    path, fmt = found
    meta = _read_json(path)
    entries = meta["consolidated_metadata"]["metadata"] if fmt == "v3" else meta["metadata"]

    def listed(key: str) -> bool:
        return any(key == p or key.startswith(p + "/") for p in prefixes)

    for key in [k for k in entries if listed(k)]:
        del entries[key]
    _atomic_write_json(path, meta)


def _finish_root(
    store: Path,
    written: dict[str, dict],
    removed: Sequence[str],
    consolidate: bool,
    attrs: dict[str, Any] | None = None,
) -> None:
    """Write the provenance registry (and ``attrs``) into the root attributes, then refresh the consolidated metadata."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = zarr.open_group(str(store), mode="r+", use_consolidated=False)
        record = dict(root.attrs.asdict()).get(_ATTRS_KEY)
        root.attrs[_ATTRS_KEY] = _merge_registry(record, written, removed, attrs)
        if consolidate:
            zarr.consolidate_metadata(root.store)
        root.store.close()
