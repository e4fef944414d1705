"""Safe writes into a SpatialData: compute first, stage, swap in on success; provenance of what stpredict wrote.

Every function that adds elements to a SpatialData does it through one :class:`ElementWriter`::

    with ElementWriter(sdata, names, overwrite=overwrite, by="tl.predict_dense") as w:
        ...  # compute; big arrays go to ``w.scratch``
        w.add(name, element)
    # on success every element is in ``sdata`` (and on disk when it is backed); on any error nothing changed

The protocol on a zarr-backed SpatialData, in the manner of a database journal:

1. **Check** (on creation, before anything is computed): a name that exists is refused unless
   ``overwrite=True`` *and* stpredict wrote it (the provenance registry ``sdata.attrs["stpredict"]["written"]``).
   Nothing is deleted here.
2. **Stage**: a transaction folder ``<store>/.stpredict/tx-<id>/`` holds the scratch arrays and a SpatialData
   ``staged.zarr`` with the new elements (elements staged early by :meth:`ElementWriter.stage`, e.g. a map filled
   in place, sit there; the others are written in one ``rest.zarr`` and moved beside them). spatialdata never lists
   the hidden ``.stpredict`` folder, so a kill at
   this stage leaves the store exactly as it was; the folder of a dead process is swept by the next write.
3. **Commit**: ``journal.json`` (written atomically) records the moves; from here the transaction rolls forward,
   now or, after a kill, on the next write (:func:`recover_store`).
4. **Swap**: replaced elements are first dropped from the consolidated metadata (one atomic write of the root
   metadata, so readers never see an element whose files are being moved), the old folders move into the
   transaction folder, the staged ones into place (one ``rename`` each), and the root metadata (provenance
   registry and consolidated listing) is rewritten atomically. The transaction folder is then deleted.

At every instant ``spatialdata.read_zarr`` opens the store: an element it lists is complete. Without a backing
store the same object only changes ``sdata`` in memory, and only after everything was computed.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from spatialdata import SpatialData

from .._logging import logger, quiet_ome_zarr
from .._version import __version__
from ._store_meta import (
    _ATTRS_KEY,
    HIDDEN_DIR,
    _atomic_write_json,
    _backing_store,
    _consolidated_file,
    _drop_from_consolidated,
    _element_type,
    _finish_root,
    _merge_registry,
    _read_json,
    _store_lock,
    _sweep_dead,
    _write_owner,
    check_new_names,
    file_sha256,
    is_zarr_store,
    no_label_colours,
    scratch_dir,
    store_attrs,
    store_elements,
    store_registry,
    written_elements,
)
from ._table_write import _write_new_store

__all__ = [
    "ElementWriter",
    "check_new_names",
    "file_sha256",
    "is_zarr_store",
    "no_label_colours",
    "recover_store",
    "scratch_dir",
    "store_attrs",
    "store_elements",
    "store_registry",
    "write_along",
    "written_elements",
]


# --------------------------------------------------------------------------------------------------- transactions
def _move_element(src_store: Path, dst_store: Path, kind: str, name: str, rename: Any = None) -> None:
    """Move the folder of element ``kind/name`` from one SpatialData store to another (a rename, same filesystem).

    The metadata files of the type's group that the destination lacks are copied first.
    """
    src, dst = src_store / kind / name, dst_store / kind / name
    dst.parent.mkdir(exist_ok=True)
    for f in src.parent.iterdir():  # also after a kill between the folder and its metadata
        if f.is_file() and not (dst.parent / f.name).exists():
            shutil.copy2(f, dst.parent / f.name)
    (rename or os.rename)(src, dst)


def _apply(store: Path, tx: Path) -> None:
    """Roll a committed transaction forward (idempotent: safe to re-run after a kill at any point)."""
    journal = _read_json(tx / "journal.json")
    if journal is None:
        raise RuntimeError(f"Transaction {tx} has an unreadable journal.")
    moves = journal["moves"]
    consolidate = journal["consolidated"]
    # what readers must stop seeing before any folder moves: replaced (staged and present) and removed elements
    leaving = [
        f"{m['type']}/{m['name']}"
        for m in moves
        if (store / m["type"] / m["name"]).exists()
        and (m.get("remove") or (tx / "staged.zarr" / m["type"] / m["name"]).exists())
    ]
    _drop_from_consolidated(store, leaving)
    for m in moves:
        src = tx / "staged.zarr" / m["type"] / m["name"]
        dst = store / m["type"] / m["name"]
        if not m.get("remove") and not src.exists():
            continue  # moved before a kill
        if dst.exists():
            trash = tx / "old" / m["type"] / m["name"]
            shutil.rmtree(trash, ignore_errors=True)
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(dst, trash)
        if m.get("remove"):
            continue
        _move_element(tx / "staged.zarr", store, m["type"], m["name"])
    _finish_root(store, journal["written"], journal["removed"], consolidate, journal.get("attrs"))
    shutil.rmtree(tx, ignore_errors=True)


def recover_store(path: str | os.PathLike) -> list[str]:
    """Finish or undo what interrupted stpredict writes left in a zarr store, and say which result it holds.

    stpredict stages each write in ``<store>/.stpredict/tx-*/`` (``staged.zarr`` and, once committed,
    ``journal.json``). A committed transaction is rolled forward: the staged elements are renamed into place under
    ``images/``, ``shapes/``, ``tables/`` …, the elements they replace are removed, and the provenance registry
    (root ``attrs["stpredict"]["written"]``) and the consolidated metadata (``zarr.json``) are rewritten: the store
    holds the interrupted run's result. An uncommitted one (killed before its output was complete) is deleted once
    its process no longer runs; the store's elements are not touched: it holds what it held before that run. Each
    of these is logged as a warning that says which. Every stpredict write into a store calls this first; call it
    yourself after a crash if you want the store tidy before reading it (it opens either way).

    A store that ``stpredict predict SLIDE --out STORE --overwrite`` of stpredict 0.1 had set aside as
    ``.STORE.replaced`` when it was killed is put back in place (the killed run's partial store is removed).

    Parameters
    ----------
    path
        The SpatialData zarr store.

    Returns
    -------
    The names of the transaction folders finished or removed (and ``".STORE.replaced"`` when one was put back).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist (a misspelt path is not "nothing to recover").
    ValueError
        When ``path`` is not a zarr store.

    """
    store = Path(path)
    done = _restore_set_aside(store)
    if not store.exists():
        raise FileNotFoundError(
            f"No zarr store at {str(store)!r}: the path does not exist. Check the spelling."
        )
    if not is_zarr_store(store):
        what = "a file" if store.is_file() else "a folder without zarr metadata (zarr.json)"
        raise ValueError(
            f"{str(store)!r} is {what}, not a SpatialData zarr store; there is nothing to recover."
        )
    return done + _recover_transactions(store)


def _recover_transactions(store: Path) -> list[str]:
    """Finish the committed and remove the dead uncommitted transactions of ``store`` (see :func:`recover_store`)."""
    done: list[str] = []
    hidden = store / HIDDEN_DIR
    if not hidden.is_dir():
        return done
    with _store_lock(store):
        for tx in sorted(hidden.glob("tx-*")):
            if (tx / "journal.json").exists():
                journal = _read_json(tx / "journal.json") or {}
                by = sorted({w.get("by", "?") for w in journal.get("written", {}).values()}) or ["stpredict"]
                names = sorted(journal.get("written", {})) + sorted(journal.get("removed", []))
                _apply(store, tx)
                logger.warning(
                    f"{store}: an interrupted run of {', '.join(by)} had committed its write {tx.name} but not "
                    f"finished it; it is now finished, so the store holds that run's result ({', '.join(names)})."
                )
                done.append(tx.name)
        for name in _sweep_dead(hidden, "tx-*"):
            logger.warning(
                f"{store}: an interrupted stpredict run ({name}) stopped before its output was complete; its partial "
                "output was removed, so the store holds what it held before that run."
            )
            done.append(name)
    return done


def set_aside_path(store: Path) -> Path:
    """Where stpredict 0.1's ``predict SLIDE --out STORE --overwrite`` kept the earlier store while it ran."""
    return store.with_name(f".{store.name}.replaced")


def _run_succeeded(store: Path) -> bool:
    """Whether ``store`` holds the committed output of a prediction (in its registry, or a committed journal)."""
    if any(e.get("by") in ("tl.predict_dense", "tl.predict_shapes") for e in store_registry(store).values()):
        return True
    return any((tx / "journal.json").is_file() for tx in (store / HIDDEN_DIR).glob("tx-*"))


def _restore_set_aside(store: Path) -> list[str]:
    """Settle what a killed 0.1 ``stpredict predict SLIDE --out STORE --overwrite`` left: ``.STORE.replaced``.

    0.1 moved the earlier store aside, wrote a new one (H&E copy, footprint files, then the predictions in one
    transaction) and deleted the aside copy at the end. If the new store holds committed predictions, the run
    succeeded and was killed while deleting the aside copy: the rest of it goes. Otherwise the new store is the killed
    run's partial output and the earlier store is put back — unless the partial store holds more than that run
    wrote (elements added since), in which case both are kept and the error says so.
    """
    aside = set_aside_path(store)
    if not aside.is_dir():
        return []
    if store.exists() and is_zarr_store(store) and _run_succeeded(store):
        shutil.rmtree(aside, ignore_errors=True)
        logger.warning(
            f"{store}: removed the rest of {aside.name}, the earlier store an interrupted `stpredict predict ... "
            "--overwrite` had almost finished deleting after it succeeded; the store holds that run's result."
        )
        return [aside.name]
    if not is_zarr_store(aside):
        raise RuntimeError(
            f"{aside} is not a complete zarr store (an interrupted run of stpredict 0.1 set it aside); nothing was "
            f"changed. Look inside it and {store} before removing either."
        )
    if store.exists():
        slide = (
            ((store_attrs(store).get(_ATTRS_KEY) or {}).get("slide") or {}) if is_zarr_store(store) else {}
        )
        elements = store_elements(store)
        extra = sorted(n for n, t in elements.items() if not (n == slide.get("image") or t == "shapes"))
        if extra or (elements and not slide):
            raise RuntimeError(
                f"{store} holds more than the partial output of an interrupted `stpredict predict ... --overwrite` "
                f"({extra or 'it is not a slide store'}), and {aside.name} beside it holds the store from before that "
                "run; nothing was changed. Keep what you need of each and remove the other."
            )
    swap_folder(aside, store, f".{store.name}.interrupted-{uuid.uuid4().hex[:8]}")
    logger.warning(
        f"{store}: put back the earlier store that an interrupted `stpredict predict ... --overwrite` had set aside "
        f"as {aside.name}; the store holds the result from before that run (its partial output was removed)."
    )
    return [aside.name]


def swap_folder(new: Path, dst: Path, trash_name: str) -> None:
    """Rename the folder ``new`` to ``dst``, replacing a folder there (renamed to ``trash_name``, then deleted).

    Two renames: between them ``dst`` is missing and the earlier folder sits at ``trash_name`` beside it.
    """
    if dst.exists():
        trash = dst.with_name(trash_name)
        os.rename(dst, trash)
        os.rename(new, dst)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(new, dst)


_JOINED: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "stpredict_joined", default=None
)


@contextlib.contextmanager
def write_along(
    sdata: SpatialData,
    own: Sequence[str],
    *,
    by: str,
    remove: Sequence[str] = (),
    attrs: dict[str, Any] | None = None,
    stamp: dict[str, Any] | None = None,
    adopt: Sequence[str] = (),
) -> Iterator[dict[str, Any]]:
    """Have the next :class:`ElementWriter` on ``sdata`` inside the block write more in its one transaction.

    ``own`` are elements already in ``sdata`` (in memory, e.g. an image read lazily from a slide file) to be written
    to its store, recorded as written ``by``; ``remove`` are elements stpredict wrote earlier to remove; ``attrs``
    are keys of the root ``attrs["stpredict"]`` record to set; ``stamp`` is added to the registry record of every
    element that writer writes (e.g. a run id); ``adopt`` are elements stpredict wrote without a registry record
    (see :func:`check_new_names`). The command line uses this to add the H&E copy and
    the predictions of a slide to a store in one step. The yielded dict's ``"taken"`` says whether a writer did.
    """
    joined = {
        "sdata": sdata,
        "own": list(own),
        "by": by,
        "remove": list(remove),
        "attrs": dict(attrs or {}),
        "stamp": dict(stamp or {}),
        "adopt": list(adopt),
    }
    joined["taken"] = False
    token = _JOINED.set(joined)
    try:
        yield joined
    finally:
        _JOINED.reset(token)


class ElementWriter:
    """Add elements to a SpatialData all at once, after they are computed; see the module docstring.

    Parameters
    ----------
    sdata
        The SpatialData to add to (in memory, or backed by a zarr store).
    names
        Every element name the operation will add; checked now, before anything is computed.
    overwrite
        Allow replacing elements of these names that stpredict wrote earlier.
    by
        The public function writing (recorded in the provenance registry), e.g. ``"tl.predict_dense"``.

    Inside :func:`write_along` on ``sdata``, the first writer also writes the elements given there, removes the ones
    given there and sets the root attributes given there, all in its one transaction.

    """

    def __init__(self, sdata: SpatialData, names: Sequence[str], *, overwrite: bool, by: str) -> None:
        self.sdata = sdata
        self.by = by
        joined = _JOINED.get()
        took = joined is not None and joined["sdata"] is sdata and not joined["taken"]
        if took:  # the first writer on this sdata inside `write_along` takes its elements along
            joined["taken"] = True
        else:
            joined = {"own": [], "by": by, "remove": [], "attrs": None, "stamp": {}, "adopt": []}
        self.names = [*names, *joined["own"]]
        self.own = list(joined["own"])
        self.stamp = joined["stamp"]
        self.attrs = joined["attrs"]
        self.remove = [n for n in joined["remove"] if n not in self.names]
        self.replace = check_new_names(sdata, self.names, overwrite, own=self.own, adopt=joined["adopt"])
        # what is removed is the store's element (the object may hold another of that name, e.g. a slide's image)
        self.remove = check_new_names(sdata, self.remove, True, own=self.remove)
        self.elements: dict[str, Any] = {}
        self._by: dict[str, str] = {}
        self.committed = False
        self._scratch: Path | None = None
        self._tx: Path | None = None
        self._early: SpatialData | None = None  # the elements written by `stage`, before the others
        self.store = _backing_store(sdata)
        for n in self.own:
            self.add(n, sdata[n], by=joined["by"])

    # -- context
    def __enter__(self) -> ElementWriter:
        if self.store is not None:
            _recover_transactions(self.store)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    @property
    def tx(self) -> Path:
        """The transaction folder inside the store (created on first use)."""
        if self.store is None:
            raise RuntimeError("Only a SpatialData backed by zarr has a transaction folder.")
        if self._tx is None:
            hidden = self.store / HIDDEN_DIR
            hidden.mkdir(exist_ok=True)
            self._tx = hidden / f"tx-{datetime.datetime.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
            self._tx.mkdir()
            _write_owner(self._tx)
        return self._tx

    @property
    def scratch(self) -> Path:
        """A folder for intermediate arrays: inside the transaction when backed, else a swept temporary folder."""
        if self._scratch is None:
            if self.store is not None:
                self._scratch = self.tx / "scratch"
                self._scratch.mkdir()
            else:
                self._scratch = scratch_dir()
        return self._scratch

    @property
    def staging(self) -> Path:
        """The SpatialData store :meth:`stage` writes into: in the transaction when backed, else in scratch."""
        return (self.tx if self.store is not None else self.scratch) / "staged.zarr"

    def stage(self, name: str, element: Any, *, raster_compressor: dict[str, int] | None = None) -> Path:
        """Write ``element`` into the staging store now, before the other elements are computed; return its folder.

        For an element too large to be written twice: the caller fills its arrays in place (e.g. the dense map,
        written block by block as the network produces it) and then passes it to :meth:`add` under the same name, read
        back with :meth:`read_staged`; the commit moves the staged folder into the store without writing it again.
        ``raster_compressor`` is spatialdata's (e.g. ``{"lz4": 5}``).
        """
        if name not in self.names:
            raise RuntimeError(f"{name!r} was not declared to the ElementWriter ({self.names}).")
        with warnings.catch_warnings(), no_label_colours():
            warnings.filterwarnings("ignore", category=UserWarning, module="zarr")
            if self._early is None:
                self._early = SpatialData()
                self._early[name] = element
                self._early.write(
                    self.staging,
                    consolidate_metadata=False,
                    update_sdata_path=True,
                    raster_compressor=raster_compressor,
                )
            else:
                self._early[name] = element
                self._early.write_element(name, raster_compressor=raster_compressor)
        return self.staging / _element_type(self._early, name) / name

    def read_staged(self, name: str) -> Any:
        """An element written by :meth:`stage`, read back lazily from the staging store."""
        import spatialdata as sd

        kind = _element_type(self._early, name) if self._early is not None else None
        if kind is None:
            raise RuntimeError(f"{name!r} was not staged.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with quiet_ome_zarr():
                back = sd.read_zarr(self.staging, selection=(kind,))
        return getattr(back, kind)[name]

    def add(self, name: str, element: Any, *, by: str | None = None) -> None:
        """Queue ``element`` to be added under ``name`` (one of the names given on creation).

        ``by`` records another writer than the writer's own in the provenance registry.
        """
        if name not in self.names:
            raise RuntimeError(f"{name!r} was not declared to the ElementWriter ({self.names}).")
        self.elements[name] = element
        if by is not None:
            self._by[name] = by

    # -- outcome
    def rollback(self) -> None:
        """Forget the queued elements and remove the transaction folder; ``sdata`` is unchanged."""
        self.elements.clear()
        if self._tx is not None:
            shutil.rmtree(self._tx, ignore_errors=True)
        elif self._scratch is not None and self.store is None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def commit(self) -> None:
        """Add every queued element to ``sdata`` (and to its store), replacing the checked ones."""
        if self.committed:
            return
        staged = self._staged_sdata()
        record = {
            "stpredict_version": __version__,
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        types = {n: _element_type(staged, n) for n in self.elements}
        written = {
            n: {"type": types[n], "by": self._by.get(n, self.by), **record, **self.stamp}
            for n in self.elements
        }
        removed = [n for n in self.replace if n not in self.elements] + self.remove
        if self.store is not None:
            self._commit_to_store(staged, types, written, removed)
        for n in self.replace + self.remove:
            if n in self.sdata and (n not in self.own or n not in self.elements):
                del self.sdata[n]
        for n, el in self.elements.items():
            getattr(self.sdata, types[n])[n] = el
        if self.store is not None:
            self._reload_images(types)
        self.sdata.attrs[_ATTRS_KEY] = _merge_registry(
            self.sdata.attrs.get(_ATTRS_KEY), written, removed, self.attrs
        )
        self.committed = True

    def _staged_sdata(self) -> SpatialData:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*annotating.*not present")
            staged = SpatialData()
            for n, el in self.elements.items():
                staged[n] = el
        return staged

    def _commit_to_store(self, staged: SpatialData, types: dict, written: dict, removed: list[str]) -> None:
        with warnings.catch_warnings(), no_label_colours():
            warnings.filterwarnings("ignore", message=".*annotating.*not present")
            warnings.filterwarnings("ignore", category=UserWarning, module="zarr")
            if self._early is None:
                _write_new_store(staged, self.tx / "staged.zarr")
            else:  # the staging store holds the staged elements already: write the others beside them
                rest = {n: el for n, el in self.elements.items() if _element_type(self._early, n) is None}
                if rest:
                    # in one `write` of their own, then moved in: spatialdata's `write_element` re-reads the whole
                    # store's metadata on every call (~0.3 s each)
                    extra = SpatialData()
                    for n, el in rest.items():
                        extra[n] = el
                    _write_new_store(extra, self.tx / "rest.zarr")
                    # beside the staged ones, before the commit point, so the journal lists one source as ever;
                    # os.replace, not the os.rename of the swap: these moves are staging, not part of the swap
                    # (tests/tl/test_interrupted.py kills at the swap's first os.rename)
                    for n in rest:
                        _move_element(self.tx / "rest.zarr", self.staging, types[n], n, rename=os.replace)
        moves = [{"type": types[n], "name": n} for n in self.elements]
        # replaced elements that are not re-added, and the ones to remove, are moved out as well
        on_disk = store_elements(self.store)
        moves += [
            {"type": on_disk.get(n) or _element_type(self.sdata, n), "name": n, "remove": True}
            for n in removed
        ]
        consolidated = _consolidated_file(self.store) is not None
        _atomic_write_json(
            self.tx / "journal.json",
            {
                "moves": moves,
                "written": written,
                "removed": removed,
                "consolidated": consolidated,
                "attrs": self.attrs,
            },
        )
        with _store_lock(self.store):
            _apply(self.store, self.tx)

    def _reload_images(self, types: dict) -> None:
        """Point the in-memory images and labels at their copies in the store (lazy), not at scratch."""
        import spatialdata as sd

        lazy = [n for n, t in types.items() if t in ("images", "labels")]
        if not lazy:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with quiet_ome_zarr():
                back = sd.read_zarr(self.store, selection=("images", "labels"))
        for n in lazy:
            getattr(self.sdata, types[n])[n] = getattr(back, types[n])[n]
