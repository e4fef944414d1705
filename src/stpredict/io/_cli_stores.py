"""The stores the command line writes (docs/safety.md), and footprint files read into a slide's SpatialData.

- :func:`write_new`: a new store written beside ``out`` and renamed into place; ``overwrite`` replaces only a store
  of stpredict's own elements (``stpredict read-st --out``);
- :func:`check_slide_out`, :func:`slide_run`: the store ``stpredict predict SLIDE --out S`` writes, where a re-run
  with ``overwrite`` replaces what the earlier slide run wrote and keeps every element the user added;
- :func:`read_shapes_file`: a GeoJSON / GeoParquet file of footprints added to a slide's SpatialData.

A write these rules refuse raises :class:`StoreRefused` before anything is computed or written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from spatialdata import SpatialData

from .._core._store import recover_store, set_aside_path, swap_folder, write_along
from .._core._store_meta import (
    _ELEMENT_TYPES,
    HIDDEN_DIR,
    _element_type,
    _pid_alive,
    is_zarr_store,
    no_label_colours,
    store_attrs,
    store_elements,
    store_registry,
)
from .._logging import quiet_ome_zarr
from .._paths import StoreRefused

__all__ = [
    "StoreRefused",
    "check_slide_out",
    "is_slide_store",
    "read_shapes_file",
    "slide_run",
    "write_new",
]


def side_name(out: Path, kind: str) -> str:
    """The name of a folder this process keeps beside ``out`` while it writes (``new``) or swaps (``old``)."""
    return f".{out.name}.{kind}-{socket.gethostname()}-{os.getpid()}"


def sweep_beside(out: Path) -> None:
    """Tidy what killed processes of this machine left next to ``out``, so that it holds the earlier or the new result.

    Half-made new stores go; an earlier store moved aside for a swap that did not finish (:func:`write_new`) goes
    back. Folders of other machines' processes (a shared file system) are left alone: their processes cannot be
    checked.
    """
    host = socket.gethostname()

    def dead(p: Path) -> bool:
        pid = p.name.rsplit("-", 1)[-1]
        return not _pid_alive({"host": host, "pid": int(pid) if pid.isdigit() else None})

    for p in sorted(out.parent.glob(f".{out.name}.old-{host}-*")):
        if not dead(p):
            continue
        if out.exists():
            shutil.rmtree(p, ignore_errors=True)
        else:
            os.rename(p, out)
            print(f"{out}: put back the earlier store an interrupted run had moved aside.", file=sys.stderr)
    for p in out.parent.glob(f".{out.name}.new-{host}-*"):
        if dead(p):
            shutil.rmtree(p, ignore_errors=True)


def write_new(sdata: SpatialData, out: str | os.PathLike, overwrite: bool, by: str) -> None:
    """Write ``sdata`` as a new store at ``out``; ``overwrite`` replaces only a store of stpredict's own elements.

    The store is written beside ``out`` and renamed into place, so a kill leaves the earlier store or the new one.
    ``by`` is recorded as the writer of every element.
    """
    out = Path(out)
    sweep_beside(out)
    if out.exists():
        if not overwrite:
            raise StoreRefused(f"{out} exists; pass --overwrite to replace it.")
        if not is_zarr_store(out) or not store_registry(out):
            raise StoreRefused(
                f"{out} exists and is not a store stpredict wrote; --overwrite replaces only those. Choose another "
                "--out."
            )
        registry = store_registry(out)
        yours = sorted(n for n, t in store_elements(out).items() if (registry.get(n) or {}).get("type") != t)
        known = {"zarr.json", ".zattrs", ".zgroup", ".zmetadata", HIDDEN_DIR, *_ELEMENT_TYPES}
        yours += sorted(p.name for p in out.iterdir() if p.name not in known)
        if yours:
            raise StoreRefused(
                f"{out} holds element(s) {yours} that stpredict did not write (yours), so --overwrite does not "
                "replace it; nothing was changed. Choose another --out, or remove those elements first."
            )
    record = sdata.attrs.setdefault("stpredict", {})
    names = [n for t in _ELEMENT_TYPES for n in getattr(sdata, t)]
    record["written"] = {n: {"type": _element_type(sdata, n), "by": by} for n in names}
    tmp = out.with_name(side_name(out, "new"))
    with quiet_ome_zarr(), no_label_colours():
        sdata.write(tmp, overwrite=True)
    swap_folder(tmp, out, side_name(out, "old"))  # a kill between its renames: sweep_beside


def is_slide_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zarr store that ``stpredict predict`` wrote for a slide file."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        return False
    return ((store_attrs(path).get("stpredict") or {}).get("slide") or {}).get("reader") == "read_wsi"


def check_slide_out(out: str | os.PathLike, overwrite: bool) -> dict[str, str]:
    """Check the store a slide run would write to, settle what interrupted runs left; its elements (name -> type).

    It must not exist, or be a store ``stpredict predict`` wrote for a slide; an existing one with elements needs
    ``overwrite``.
    """
    out = Path(out)
    sweep_beside(out)
    if set_aside_path(out).exists():  # what a killed run of stpredict 0.1 left: settled first
        recover_store(out)
    if out.exists() and not is_slide_store(out):
        raise StoreRefused(
            f"{out} exists and is not a store `stpredict predict` wrote for a slide; --overwrite replaces only "
            "what stpredict wrote in those. Choose another --out (predictions for an existing SpatialData store: "
            "`stpredict predict STORE.zarr --model ...` writes into it)."
        )
    if out.exists():
        recover_store(out)  # an interrupted earlier run: finished or undone, and it says which
    existing = store_elements(out) if out.exists() else {}
    if existing and not overwrite:
        raise StoreRefused(
            f"{out} exists; pass --overwrite to replace what an earlier `stpredict predict` wrote in it "
            "(elements you added to it stay)."
        )
    if out.exists() and not existing:
        print(
            f"{out} holds no elements (an interrupted run left it empty); writing into it.", file=sys.stderr
        )
    return existing


def _earlier_slide_run(
    out: Path, existing: dict[str, str], record: dict, own: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The earlier slide run's elements in ``out`` (replaced or removed) and a 0.1 store's elements to adopt.

    Checks first that the user's elements are safe; changes nothing.
    """
    earlier_record = (store_attrs(out).get("stpredict") or {}).get("slide") or {}
    registry = store_registry(out)
    run = earlier_record.get("run")
    adopt: list[str] = []
    if run is not None:
        earlier = [n for n, e in registry.items() if e.get("run") == run and n in existing]
    else:
        # a store of stpredict 0.1: its H&E copy and footprint files have no registry record; they are the recorded
        # image and the shapes this run writes again under the same names (replaced, never removed)
        earlier = []
        adopt = [
            n
            for n in own
            if n not in registry
            and existing.get(n) == ("images" if n == earlier_record.get("image") else "shapes")
        ]
    yours = sorted(n for n in existing if n not in earlier and n not in adopt and n not in registry)
    clash = sorted(set(yours) & set(own))
    if clash:
        raise StoreRefused(
            f"{out} holds element(s) {clash} that stpredict did not write (yours), and this run would write elements "
            "of the same names; nothing was changed. Rename the footprint file(s) or --dataset-id, or choose "
            "another --out."
        )

    def identity(r: dict) -> tuple:
        levels = r.get("levels") or [[None, None]]
        return Path(str(r.get("path", ""))).name, tuple(levels[0]), r.get("mpp")

    if yours and identity(earlier_record) != identity(record):
        name, shape, mpp = identity(earlier_record)
        raise StoreRefused(
            f"{out} holds element(s) you added ({', '.join(yours)}) on the slide {name} ({shape[1]} x {shape[0]} px, "
            f"{mpp} µm/px); this run is for {identity(record)[0]} ({record['levels'][0][1]} x "
            f"{record['levels'][0][0]} px, {record['mpp']} µm/px), so they would no longer match. Nothing was "
            "changed: choose another --out, or remove those elements first."
        )
    return earlier, adopt


def _new_store(out: Path, attrs: dict) -> None:
    """Create an empty SpatialData store at ``out`` in one rename (a kill leaves no half-made store there)."""
    tmp = out.with_name(side_name(out, "new"))
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_ome_zarr():
        SpatialData(attrs=attrs).write(tmp)
    os.rename(tmp, out)


@contextlib.contextmanager
def slide_run(
    sdata: SpatialData, out: str | os.PathLike, existing: dict[str, str], own: Sequence[str]
) -> Iterator[dict[str, Any]]:
    """Everything written into ``sdata`` inside the block lands in the slide store ``out`` as one run.

    ``sdata`` is a slide's SpatialData (:func:`stpredict.io.read_wsi`), ``existing`` what :func:`check_slide_out`
    returned and ``own`` the elements of ``sdata`` this run writes besides its predictions (the H&E copy, footprint
    files). With an earlier run in ``out``, its elements are replaced or removed in the same transaction and the
    user's elements stay; a clash with them raises :class:`StoreRefused` before anything is written. A new store
    that the run leaves empty (it failed) is removed.
    """
    out = Path(out)
    record = dict(sdata.attrs["stpredict"]["slide"])
    earlier, adopt = _earlier_slide_run(out, existing, record, own) if existing else ([], [])
    run = uuid.uuid4().hex
    if not out.exists():
        _new_store(out, {"stpredict": {"slide": record}})
    created = not existing
    sdata.path = out
    try:
        with write_along(
            sdata,
            list(own),
            by="stpredict predict",
            remove=earlier,
            attrs={"slide": {**record, "run": run}},
            stamp={"run": run},
            adopt=adopt,
        ) as joined:
            yield joined
        if not joined["taken"]:  # pragma: no cover - every prediction path writes through an ElementWriter
            raise RuntimeError("the prediction wrote nothing into the store")
    except BaseException:
        if created and out.exists() and not store_elements(out):  # the empty store this run made
            shutil.rmtree(out, ignore_errors=True)
        raise


def read_shapes_file(sdata: SpatialData, path: str | os.PathLike, pixel_cs: str) -> str:
    """Add a GeoJSON / GeoParquet file of footprints (full-resolution pixels) to a slide's ``sdata``; its name.

    The element is named after the file (``spots.geojson`` -> ``spots``) and placed in ``pixel_cs`` and in microns.
    """
    import geopandas as gpd
    from spatialdata.models import ShapesModel

    from .._core._mpp import pixel_and_micron_transforms

    item = str(path)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"--shapes {item}: a slide file has no shapes elements, so --shapes takes files of footprints "
            "(GeoJSON or GeoParquet, in the slide's full-resolution pixels); this file does not exist."
        )
    gdf = gpd.read_parquet(path) if path.suffix.lower() == ".parquet" else gpd.read_file(path)
    gdf = gdf.reset_index(drop=True).set_crs(None, allow_override=True)  # pixels, not a map projection
    name = path.name.split(".")[0]
    if name in sdata.shapes or name in sdata.images:
        raise StoreRefused(f"--shapes {item}: two elements would be named {name!r}; rename one of the files.")
    mpp = sdata.attrs["stpredict"]["slide"]["mpp"]
    sdata.shapes[name] = ShapesModel.parse(
        gdf, transformations=pixel_and_micron_transforms(pixel_cs, mpp=mpp)
    )
    return name
