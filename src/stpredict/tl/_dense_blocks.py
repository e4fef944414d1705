"""The blocks of ``tl.predict_dense``, and the map they are written into.

One dask task per tissue block runs the network, writes the block into the map's stored levels and reduces it to
its bins while it is in memory; the map's skeleton is staged before and its coarser levels are filled after.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr
from spatialdata.models import Image2DModel

from .._core import default_scale_factors
from .._core._latent import apply_head

#: The dense map's value where nothing was predicted (off the tissue, outside ``tiles``): 0, so spatialdata-plot,
#: which refuses NaN, draws it. Bins and named shapes never average over it.
NO_DATA = 0.0


#: The map's codec (spatialdata's ``raster_compressor``): Blosc-LZ4, about 2.6x zstd's speed at a similar size on
#: these smooth maps (benchmarks/README.md, "predict_dense vs the forward pass").
MAP_COMPRESSOR = {"lz4": 5}


def _genes_per_chunk(n_genes: int, chunk: int, itemsize: int) -> int:
    """Genes in one chunk of the stored map: about 32 MB of a ``chunk`` × ``chunk`` block."""
    return int(min(n_genes, max(1, 2**25 // (itemsize * chunk * chunk))))


def _map_skeleton(
    genes: Sequence[str],
    shape: tuple[int, int],
    dtype: Any,
    chunk: int,
    transformations: dict,
    per_chunk: int | None = None,
) -> Any:
    """The map element with every level 0, lazily, each level chunked like the blocks (level 1 in half blocks).

    It is staged (written) first and its arrays are then filled in place; zarr writes no chunk that equals the
    fill value 0, so staging it writes only metadata. Chunks hold a slab of genes (about 32 MB of one block), so
    that reading one gene reads that slab only and each block is written one slab at a time; ``per_chunk`` sets
    the channels per chunk instead (all of a latent map's, which every gene is read from).
    """
    n = len(genes)
    g = per_chunk or _genes_per_chunk(n, chunk, np.dtype(dtype).itemsize)
    zeros = da.broadcast_to(np.zeros((1, 1, 1), dtype), (n, *shape), chunks=(g, chunk, chunk))
    el = Image2DModel.parse(
        zeros,
        dims=("c", "y", "x"),
        c_coords=list(genes),
        scale_factors=default_scale_factors(shape, smallest=256) or None,
        transformations=transformations,
    )
    for name in el.children:
        node = el[name]
        img = node["image"]
        # level 1 in half blocks, so that each block's task writes its own chunk of it
        side = chunk // 2 if name == "scale1" and chunk % 2 == 0 else chunk
        data = da.broadcast_to(np.zeros((1, 1, 1), img.dtype), img.shape, chunks=(g, side, side))
        node.dataset = node.to_dataset().assign(image=img.copy(data=data))
    return el


def _mean2_block(block: np.ndarray, out_dtype: Any) -> np.ndarray:
    """The 2 × 2 means of one ``(c, y, x)`` block of even sides, as ``out_dtype``."""
    return (_pool_sum(block, 2) * 0.25).astype(out_dtype, copy=False)


def _fill_levels(paths: Sequence[str], start: int = 1) -> None:
    """Write each coarser level of a stored map from the stored level before it: its 2 × 2 means.

    The levels ``paths[start:]``; ``paths[start - 1]`` is stored. For even sizes a 2 × 2 mean is what spatialdata's
    own 2× resampling (bilinear, no anti-aliasing) gives; an odd last row or column is dropped, as spatialdata's
    level shapes do. Each level reads only the previous stored one, block by block (spatialdata computes all
    levels in one dask call from the full resolution, which held several GB at once on a whole slide).
    """
    prev = da.from_zarr(paths[start - 1])
    for path in paths[start:]:
        target = zarr.open_array(path, mode="r+")
        even = prev[:, : target.shape[1] * 2, : target.shape[2] * 2]
        if any(c % 2 for ax in even.chunks[1:] for c in ax):  # pairs of pixels must not straddle chunks
            even = even.rechunk((even.shape[0], *(2 * max(1, c // 2) for c in prev.chunksize[1:])))
        nxt = even.map_blocks(
            _mean2_block,
            out_dtype=target.dtype,
            chunks=(
                even.chunks[0],
                tuple(c // 2 for c in even.chunks[1]),
                tuple(c // 2 for c in even.chunks[2]),
            ),
            dtype=target.dtype,
        )
        if nxt.shape != target.shape:
            raise RuntimeError(
                f"The 2 × 2 means have shape {nxt.shape}; the stored level has {target.shape}."
            )
        with dask.config.set({"array.slicing.split_large_chunks": False}):
            da.store(nxt.rechunk(target.chunks), target, lock=False)
        prev = da.from_zarr(path)


def _pool_sum(a: np.ndarray, f: int) -> np.ndarray:
    """Sums over f × f squares of the last two axes from the corner (a trailing part that is not whole dropped).

    Strided additions, one row and one column offset at a time: several times faster than a reshaped ``sum``
    over non-adjacent axes on a ``(genes, y, x)`` block.
    """
    h, w = a.shape[-2] // f, a.shape[-1] // f
    rows = a[..., 0 : h * f : f, : w * f].astype(np.float32, copy=True)
    for i in range(1, f):
        rows += a[..., i : h * f : f, : w * f]
    out = rows[..., 0::f].copy()
    for j in range(1, f):
        out += rows[..., j::f]
    return out


def _block_bins(
    block: np.ndarray,
    mask: np.ndarray,
    ks: Sequence[int],
    sums: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> list[np.ndarray]:
    """The k × k bins of one map block that touch ``mask``: ``(bins, genes)`` means over their masked pixels.

    ``block`` is 0 off the mask; bins are whole bins from the block's corner, row-major, as :func:`_block_order`
    lists them. ``sums`` (size -> sums over its bins and their masked pixel counts) seeds the reduction; each size
    is summed from the largest size already summed that divides it.
    """
    c = block.shape[0]
    sums = dict(sums or {})
    sums.setdefault(1, (block, mask.astype(np.float32)))
    out = {}
    for k in sorted(ks):
        if block.shape[1] // k == 0 or block.shape[2] // k == 0:
            out[k] = np.zeros((0, c), np.float32)
            continue
        if k not in sums:
            base = max(j for j in sums if k % j == 0)
            vals, cnt = sums[base]
            sums[k] = (_pool_sum(vals, k // base), _pool_sum(cnt, k // base))
        vals, cnt = sums[k]
        on = cnt > 0
        out[k] = np.ascontiguousarray((vals[:, on] / cnt[on]).T, dtype=np.float32)
    return [out[k] for k in ks]


def _predict_block(
    engine: Any,
    y0: int,
    y1: int,
    x0: int,
    x1: int,
    mask: np.ndarray,
    level0: str,
    level1: str | None,
    ks: Sequence[int],
    parts: Any,
    head: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[np.ndarray | int]:
    """One block, in one task: the network, the map written into the stored levels 0 and 1, and the block's bins.

    ``level1``: the map's level 1 (half blocks), written from the block's 2 × 2 means, or ``None``.

    ``head``: the linear head of a latent map; the bins are the head of their latent means (exact: it is linear).

    ``parts``: ``None`` returns each bin size's ``(bins, genes)`` values; a folder writes them there as ``.npy``
    files (for tables too large for memory) and returns their lengths.
    """
    block = engine.run_block(y0, y1, x0, x1)
    if not mask.all():
        np.multiply(block, mask, out=block)  # NO_DATA (0) off the mask
    arr = zarr.open_array(level0, mode="r+")
    arr1 = None if level1 is None else zarr.open_array(level1, mode="r+")
    n1 = None if level1 is None else _pool_sum(mask.astype(np.float32), 2)
    # the map's chunks hold a slab of genes: one slab at a time, so temporaries stay small
    step = arr.chunks[0]
    slabs: list[list[np.ndarray]] = [[] for _ in ks]
    for g0 in range(0, block.shape[0], step):
        slab = block[g0 : g0 + step]
        arr[g0 : g0 + len(slab), y0:y1, x0:x1] = slab.astype(arr.dtype, copy=False)
        sums = {}
        # the 2 × 2 sums: level 1 of the map, and the start of every even bin size's sums
        if arr1 is not None:
            s2 = _pool_sum(slab, 2)
            sums[2] = (s2, n1)
            y, x = y0 // 2, x0 // 2
            arr1[g0 : g0 + len(slab), y : y + s2.shape[1], x : x + s2.shape[2]] = (s2 * 0.25).astype(
                arr1.dtype, copy=False
            )
        for i, X in enumerate(_block_bins(slab, mask, ks, sums)):
            slabs[i].append(X)
    out: list[np.ndarray | int] = []
    for k, parts_k in zip(ks, slabs, strict=True):
        X = np.concatenate(parts_k, axis=1) if len(parts_k) > 1 else parts_k[0]
        if head is not None:
            X = apply_head(X, *head)
        if parts is None:
            out.append(X)
        else:
            np.save(Path(parts) / f"{k}_{y0}_{x0}.npy", X)
            out.append(len(X))
    return out


def _block_order(
    on: np.ndarray, k: int, blocks: Sequence[tuple[int, int, int, int]]
) -> tuple[np.ndarray, ...]:
    """Rows, columns and per-block counts of the bins in ``on`` (the k × k bin grid), block by block.

    The order of :func:`_block_bins`: the map's blocks in the order given, row-major inside each.
    """
    rows, cols, counts = [], [], []
    for y0, y1, x0, x1 in blocks:
        r0, c0 = y0 // k, x0 // k
        onb = on[r0 : r0 + (y1 - y0) // k, c0 : c0 + (x1 - x0) // k]
        r, c = np.nonzero(onb)
        rows.append(r + r0)
        cols.append(c + c0)
        counts.append(len(r))
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows), np.concatenate(cols), np.asarray(counts)


def _parts_X(
    folder: Path, k: int, blocks: Sequence[tuple[int, int, int, int]], counts: np.ndarray, n_genes: int
):
    """The ``.npy`` parts :func:`_predict_block` wrote for bin size ``k``, as one lazy ``(bins, genes)`` array."""
    parts = [
        da.from_delayed(
            dask.delayed(np.load, pure=True)(str(folder / f"{k}_{y0}_{x0}.npy")),
            shape=(n, n_genes),
            dtype=np.float32,
        )
        for (y0, _, x0, _), n in zip(blocks, counts, strict=True)
        if n
    ]
    X = da.concatenate(parts) if parts else da.zeros((0, n_genes), dtype=np.float32)
    return X.rechunk((min(100_000, max(X.shape[0], 1)), n_genes))
