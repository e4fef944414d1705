"""The one dense inference engine: stride-aligned blocks with context margins, streamed as a dask array.

Every dense prediction of stpredict goes through :class:`DenseEngine`: :meth:`DenseModel.predict`
(an in-memory image), :meth:`DenseModel.predict_footprints` / :meth:`DenseModel.predict_shapes`
(only the blocks under the footprints are computed, aggregated on the fly), and
:func:`stpredict.tl.predict_dense` (the whole slide, streamed to zarr).

A block of the output map is computed by reading it plus ``margin`` output pixels of context on every
side (clipped to the image) through the one window reader, running the network once, resampling to the
output pixel size and cropping the margin. Windows start on the network's stride grid: a strided CNN is
not shift-equivariant, so windows at other phases would give slightly different maps and visible seams.
With a margin at least the network's receptive field the tiled map equals the network run once over the
whole image; the default margin trades that exactness, at the edges of the receptive field, for speed.
An image smaller than a block plus its margins is one window: exactly one pass of the network.
"""

from __future__ import annotations

import io
import math
import os
import sys
import threading
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import dask
import dask.array as da
import numpy as np
import torch
import torch.nn.functional as F
from spatialdata import SpatialData

from .. import _docs
from .._core import (
    Footprints,
    Pyramid,
    aggregate_footprints,
    default_image_key,
    get_mpp,
    shapes_footprints,
    table_footprints,
)
from .._settings import settings
from .._types import Aggregation, Coverage
from ._base import BaseModel

__all__ = ["DenseEngine", "DenseModel"]


def _ratio(out_mpp: float, train_mpp: float) -> tuple[int, int]:
    """``(up, down)`` with out_mpp / train_mpp = down / up, one of them 1 (integer ratios only)."""
    r = out_mpp / train_mpp
    for up, down in ((1, round(r)), (round(1 / r), 1)):
        if up >= 1 and down >= 1 and abs(down / up - r) < 1e-6:
            return up, down
    raise ValueError(
        f"out_mpp ({out_mpp}) must be an integer multiple or divisor of the model's train_mpp ({train_mpp}), "
        "so that output pixels tile model pixels exactly."
    )


#: Largest default context margin (output pixels): that of the default blocks of 512. A margin is context for the
#: network, whose reach does not grow with the block; past it only the encoder's cost would (benchmarks/README.md,
#: "predict_dense vs the encoder alone").
_MAX_DEFAULT_MARGIN = 128


def _chunks(n: int, size: int) -> tuple[int, ...]:
    full, rest = divmod(n, size)
    return (size,) * full + ((rest,) if rest else ())


class DenseEngine:
    """A dense map of one image computed block by block.

    Parameters
    ----------
    module
        A network mapping RGB ``(B, 3, H, W)`` uint8 to ``(B, n_genes, H, W)`` with a ``stride``.
    pyramid
        The image (:class:`stpredict._core.Pyramid`).
    image_mpp
        Pixel size of the image's full resolution (µm).
    train_mpp
        Pixel size the network sees (µm).
    out_mpp
        Pixel size of the map (µm); an integer multiple or divisor of ``train_mpp``.
    chunk_size
        Block side in output pixels (rounded to whole strides).
    margin
        Context per side in output pixels (default ``min(chunk_size // 4, 128)``: the context of the default
        blocks of 512, which bigger blocks keep instead of paying a margin that grows with them; rounded up to
        whole strides).
    n_genes
        Output channels (default: ``module.n_genes``).
    latent
        Compute the *latent map* instead of the genes: the module's last features before its linear 1×1 head
        (``module.forward_region(..., latent=True)``), ``module.latent_channels`` channels, of which the map is
        ``weight @ latent + bias`` (:meth:`head`).

    """

    def __init__(
        self,
        module: torch.nn.Module,
        pyramid: Pyramid,
        *,
        image_mpp: float,
        train_mpp: float,
        out_mpp: float,
        chunk_size: int = 512,
        margin: int | None = None,
        n_genes: int | None = None,
        latent: bool = False,
    ) -> None:
        self.module = module
        self.latent = bool(latent)
        if self.latent:
            if not getattr(module, "linear_output", False) or not hasattr(module, "latent_head"):
                raise ValueError(
                    "A latent map needs a network whose output is a linear 1×1 head of its last features (PixNet "
                    "with map_space='log' and out_activation='identity'); predict the genes' map instead "
                    "(map_as='genes')."
                )
            n_genes = module.latent_channels
        self.pyramid = pyramid
        self.up, self.down = _ratio(out_mpp, train_mpp)
        self.f_out = out_mpp / image_mpp  # full-resolution px per output px
        H0, W0 = pyramid.shape
        self.n_genes = int(n_genes if n_genes is not None else module.n_genes)
        self.shape = (
            self.n_genes,
            math.ceil(H0 / self.f_out - 1e-9),
            math.ceil(W0 / self.f_out - 1e-9),
        )
        stride = int(module.stride)
        unit = max(1, stride * self.up // math.gcd(stride * self.up, self.down))  # output px of whole strides
        while (unit * self.down) % (stride * self.up):
            unit += 1
        self.unit = unit
        margin = min(chunk_size // 4, _MAX_DEFAULT_MARGIN) if margin is None else int(margin)
        if chunk_size < 1 or margin < 0:
            raise ValueError(
                f"chunk_size must be positive and margin non-negative; got {chunk_size}, {margin}."
            )
        self.chunk_size = max(unit, round(chunk_size / unit) * unit)
        self.margin = int(math.ceil(margin / unit) * unit)
        self.device = torch.device("cpu")
        # the device asked for in `running`: an engine unpickled on a dask worker resolves it there
        self._requested: str | None = None

    @contextmanager
    def running(self, device: str | torch.device | None = None) -> Iterator[DenseEngine]:
        """Move the network to ``device`` in eval mode for the duration; back to the CPU afterwards."""
        self.device = settings.resolve_device(device) if not isinstance(device, torch.device) else device
        self._requested = settings.device if device is None else str(device)
        self.module.to(self.device).eval()
        try:
            with warnings.catch_warnings():  # the weights are one key of the graph on purpose (`to_dask`)
                warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
                yield self
        finally:
            self.module.cpu()
            self.device = torch.device("cpu")

    @torch.no_grad()
    def block(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The map ``(n_genes, y1 - y0, x1 - x0)`` float32 of output pixels ``[y0, y1) × [x0, x1)``.

        The window is the block plus ``margin`` on every side, clipped to the map (so it never reads
        beyond the image more than the last output pixel does).
        """
        m, up, down, f = self.margin, self.up, self.down, self.f_out
        _, Hd, Wd = self.shape
        wy0, wy1, wx0, wx1 = max(0, y0 - m), min(Hd, y1 + m), max(0, x0 - m), min(Wd, x1 + m)
        h_in, w_in = math.ceil((wy1 - wy0) * down / up), math.ceil((wx1 - wx0) * down / up)  # model pixels
        span_y, span_x = h_in * up / down, w_in * up / down  # the window in output pixels (>= wy1 - wy0)
        img = self.pyramid.read((wx0 * f, wy0 * f, (wx0 + span_x) * f, (wy0 + span_y) * f), (h_in, w_in))
        x = torch.from_numpy(img).permute(2, 0, 1)[None].contiguous().to(self.device)
        # the block in model pixels of the window (with one more pixel where a bilinear upsampling reads it)
        oy, ox = y0 - wy0, x0 - wx0
        if up > 1:
            ry = (max(0, oy // up - 1), min(h_in, -(-(oy + y1 - y0) // up) + 1))
            rx = (max(0, ox // up - 1), min(w_in, -(-(ox + x1 - x0) // up) + 1))
        else:
            ry, rx = (oy * down, (oy + y1 - y0) * down), (ox * down, (ox + x1 - x0) * down)
        region = getattr(self.module, "forward_region", None)  # the decoder only where the block needs it
        if self.latent:
            g = region(x, (*ry, *rx), latent=True)
        elif region is not None:
            g = region(x, (*ry, *rx))
        else:
            g = self.module(x)[..., ry[0] : ry[1], rx[0] : rx[1]]
        if up > 1:
            size = ((ry[1] - ry[0]) * up, (rx[1] - rx[0]) * up)
            g = F.interpolate(g, size=size, mode="bilinear", align_corners=False)
            oy, ox = oy - ry[0] * up, ox - rx[0] * up
        else:
            g = F.avg_pool2d(g, down) if down > 1 else g
            oy, ox = 0, 0
        return g[0, :, oy : oy + (y1 - y0), ox : ox + (x1 - x0)].float().cpu().numpy()

    def head(self) -> tuple[np.ndarray, np.ndarray]:
        """The linear head ``(weight (n_genes, channels), bias (n_genes,))`` that maps a latent map to the genes."""
        return self.module.latent_head()

    def run_block(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """:meth:`block` inside a dask task, on the client's threads or on a ``dask.distributed`` worker.

        On a worker's unpickled copy of the engine this first sets it up (eval mode, the worker's device, one torch
        thread per worker thread) and reads the window without going back to the cluster.
        """
        return _run_block(self, y0, y1, x0, x1)

    def to_dask(self, mask: np.ndarray | None = None) -> da.Array:
        """The map as a lazy ``(n_genes, y, x)`` float32 dask array with blocks of ``chunk_size``.

        Blocks where ``mask`` (a boolean array of the map's ``(y, x)`` shape) is all False are 0 and
        never run the network. Compute it inside :meth:`running`.
        """
        _, Hd, Wd = self.shape
        if mask is not None and mask.shape != (Hd, Wd):
            raise ValueError(f"mask has shape {mask.shape}; the map is {(Hd, Wd)}.")

        ys, xs = _chunks(Hd, self.chunk_size), _chunks(Wd, self.chunk_size)
        active = None
        if mask is not None:  # one flag per block: the tasks carry this, not the mask
            ey, ex = np.cumsum((0, *ys)), np.cumsum((0, *xs))
            active = np.logical_or.reduceat(np.logical_or.reduceat(mask, ey[:-1], axis=0), ex[:-1], axis=1)
        token = uuid.uuid4().hex  # no tokenising: it would pickle the network's weights
        # the engine is one key of the graph that every block depends on: a distributed scheduler ships it (and
        # the network's weights) once to each worker that runs blocks, not once per task
        engine = dask.delayed(self, name=f"stpredict-engine-{token}", traverse=False)
        return da.map_blocks(
            _engine_block,
            engine,
            active=active,
            name=f"stpredict-dense-{token}",
            dtype=np.float32,
            chunks=((self.n_genes,), ys, xs),
            meta=np.empty((0, 0, 0), np.float32),
        )

    # --- pickling, for dask.distributed workers ---------------------------------------------------------------
    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_module_bytes")}
        state["_pickled_in"] = os.getpid()
        p = next(iter(self.module.state_dict().values()), None)
        if p is not None and p.device.type != "cpu":  # e.g. on the client's GPU: unpickles on a worker's CPU
            buf = io.BytesIO()
            torch.save(self.module, buf)
            state["module"], state["_module_bytes"] = None, buf.getvalue()
        state["device"] = torch.device("cpu")
        return state

    def __setstate__(self, state: dict) -> None:
        module_bytes = state.pop("_module_bytes", None)
        self.__dict__.update(state)
        if module_bytes is not None:
            self.module = torch.load(io.BytesIO(module_bytes), map_location="cpu", weights_only=False)
        self._lock = threading.Lock()
        self._ready = False  # set up on first use, in the process that runs blocks (not on the scheduler)

    def _setup_copy(self) -> None:
        """Set up an unpickled engine (a worker's copy) once: eval mode, the worker's device, torch threads.

        ``running(device)`` acted on the client's module only. The worker resolves the same request itself (so
        ``"auto"`` and ``"cuda"`` mean its own GPU, e.g. the one dask-cuda or the batch system gave it).
        """
        with self._lock:
            if self._ready:
                return
            requested = self._requested or "auto"
            device = settings.resolve_device("auto" if requested == "auto" else torch.device(requested).type)
            self.module.to(device).eval()
            self.device = device
            self._ready = True

    def compute(self, mask: np.ndarray | None = None) -> np.ndarray:
        """The whole map in memory, block by block (one block at a time)."""
        _, Hd, Wd = self.shape
        out = np.zeros(self.shape, np.float32)
        for y0 in range(0, Hd, self.chunk_size):
            for x0 in range(0, Wd, self.chunk_size):
                y1, x1 = min(Hd, y0 + self.chunk_size), min(Wd, x0 + self.chunk_size)
                if mask is None or mask[y0:y1, x0:x1].any():
                    out[:, y0:y1, x0:x1] = self.block(y0, y1, x0, x1)
        return out


def _in_dask_worker() -> bool:
    if "distributed" not in sys.modules:
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def _engine_block(engine: DenseEngine, block_info: dict | None = None, active: np.ndarray | None = None):
    """One block of :meth:`DenseEngine.to_dask` (a module-level function, so that it pickles by reference)."""
    (_, _), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    _, i, j = block_info[None]["chunk-location"]
    if active is not None and not active[i, j]:
        return np.zeros((engine.n_genes, y1 - y0, x1 - x0), np.float32)
    return _run_block(engine, y0, y1, x0, x1)


def _run_block(engine: DenseEngine, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    if not getattr(engine, "_ready", True):
        engine._setup_copy()
    if getattr(engine, "_pickled_in", os.getpid()) != os.getpid():
        # a worker process: torch with OMP_NUM_THREADS threads (1 under a dask nanny), so that each worker thread
        # runs one block on one core; set in every thread (an OpenMP thread count is per calling thread)
        n = max(1, int(os.environ.get("OMP_NUM_THREADS") or 1))
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    if _in_dask_worker():  # read the window here: a dask read inside a task would go back to the cluster
        with dask.config.set(scheduler="synchronous"):
            return engine.block(y0, y1, x0, x1)
    return engine.block(y0, y1, x0, x1)


#: Default block side of the in-memory methods (``predict``, ``predict_footprints``, ``predict_shapes``): the
#: fastest on CPU in ``benchmarks/README.md``; :func:`stpredict.tl.predict_dense` uses 512 (its blocks are also the
#: stored map's chunks).
_CHUNK = 256


def _deprecated_tiling(
    chunk_size: int | None, tile: int | None, overlap: float | None, batch_size: int | None, where: str
) -> int:
    if tile is not None:
        warnings.warn(
            f"{where}: `tile` is deprecated; dense maps are computed in blocks of `chunk_size` output pixels "
            "with a context `margin`. Pass `chunk_size=` instead.",
            FutureWarning,
            stacklevel=3,
        )
        chunk_size = chunk_size or tile
    for name, value in (("overlap", overlap), ("batch_size", batch_size)):
        if value is not None:
            warnings.warn(
                f"{where}: `{name}` is deprecated and ignored; blocks carry a context `margin` instead of "
                "overlapping and run one at a time.",
                FutureWarning,
                stacklevel=3,
            )
    return _CHUNK if chunk_size is None else int(chunk_size)


class DenseModel(BaseModel):
    """What the dense models (:class:`PixNet`, :class:`LinearProbe`) share: inference with :class:`DenseEngine`."""

    dense = True

    def engine(
        self,
        sdata: SpatialData,
        *,
        image_key: str | None = None,
        out_mpp: float | None = None,
        chunk_size: int = 512,
        margin: int | None = None,
        cache: bool = False,
        latent: bool = False,
    ) -> DenseEngine:
        """The :class:`DenseEngine` of this model over an H&E image of ``sdata`` (map at ``out_mpp``, default ``train_mpp``).

        With ``cache``, the pyramid level the windows are read from is loaded into memory once (fast for
        many windows of an image that fits in memory; :func:`stpredict.tl.predict_dense` streams instead). With
        ``latent``, the engine computes the latent map (see :class:`DenseEngine`).
        """
        self._check_trained()
        image_key = image_key or default_image_key(sdata)
        return DenseEngine(
            self.module,
            Pyramid.from_sdata(sdata, image_key, cache=cache),
            image_mpp=get_mpp(sdata, image_key),
            train_mpp=self.train_mpp,
            out_mpp=self.train_mpp if out_mpp is None else float(out_mpp),
            chunk_size=chunk_size,
            margin=margin,
            n_genes=len(self.genes),
            latent=latent,
        )

    @_docs.doc_params(chunk_size=_docs.chunk_size, margin=_docs.margin, device=_docs.device)
    def predict(
        self,
        image: np.ndarray,
        *,
        chunk_size: int | None = None,
        margin: int | None = None,
        device: str | None = None,
        tile: int | None = None,
        overlap: float | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Dense map ``(n_genes, y, x)`` float32 of an RGB ``(y, x, 3)`` uint8 image at ``train_mpp``.

        Parameters
        ----------
        image
            The image, already at the model's pixel size :attr:`train_mpp`.
        {chunk_size}
        {margin}
        {device}
        tile, overlap, batch_size
            Deprecated (blended overlapping tiles); ``tile`` is read as ``chunk_size``.

        """
        self._check_trained()
        chunk_size = _deprecated_tiling(chunk_size, tile, overlap, batch_size, "predict")
        eng = DenseEngine(
            self.module,
            Pyramid.from_array(image),
            image_mpp=self.train_mpp,
            train_mpp=self.train_mpp,
            out_mpp=self.train_mpp,
            chunk_size=chunk_size,
            margin=margin,
            n_genes=len(self.genes),
        )
        with eng.running(device):
            return eng.compute()

    def _predict_fp(
        self,
        sdata: SpatialData,
        fp: Footprints,
        *,
        image_key: str,
        how: Aggregation,
        coverage: Coverage,
        chunk_size: int,
        margin: int | None,
        device: str | None,
    ) -> np.ndarray:
        """Predictions ``(len(fp), n_genes)`` for full-resolution footprints; NaN where off the image."""
        eng = self.engine(sdata, image_key=image_key, chunk_size=chunk_size, margin=margin, cache=True)
        fp = fp.affine(np.diag([1 / eng.f_out, 1 / eng.f_out, 1.0]))  # full-resolution px -> map px
        # blocks one after the other in this thread: torch parallelises each block itself
        with eng.running(device), dask.config.set(scheduler="synchronous"):
            return aggregate_footprints(eng.to_dask(), fp, how=how, coverage=coverage).astype(np.float32)

    @_docs.doc_params(
        image_key=_docs.image_key,
        how=_docs.how,
        coverage=_docs.coverage,
        chunk_size=_docs.chunk_size,
        margin=_docs.margin,
        device=_docs.device,
    )
    def predict_footprints(
        self,
        sdata: SpatialData,
        *,
        table: str,
        image_key: str | None = None,
        how: Aggregation = "mean",
        coverage: Coverage = "center",
        chunk_size: int | None = None,
        margin: int | None = None,
        device: str | None = None,
        tile: int | None = None,
        overlap: float | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Predicted expression ``(n_obs, n_genes)`` for the footprints of a table, in table row order.

        The dense map at ``train_mpp`` is computed only in the blocks that footprints touch and
        aggregated block by block, so memory depends on the block size, not the slide size.

        Parameters
        ----------
        sdata
            SpatialData with the H&E and the table's shapes.
        table
            A table linked to shapes (spots, bins, cells).
        {image_key}
        {how}
        {coverage}
        {chunk_size}
        {margin}
        {device}
        tile, overlap, batch_size
            Deprecated (blended overlapping tiles); ``tile`` is read as ``chunk_size``.

        Returns
        -------
        Predictions in the table's row order; rows without a shape, or whose shape is off the image, are NaN.

        """
        self._check_trained()
        chunk_size = _deprecated_tiling(chunk_size, tile, overlap, batch_size, "predict_footprints")
        image_key = image_key or default_image_key(sdata)
        fp, rows = table_footprints(sdata, table, image_key)
        out = np.full((sdata.tables[table].n_obs, len(self.genes)), np.nan, np.float32)
        out[rows] = self._predict_fp(
            sdata,
            fp,
            image_key=image_key,
            how=how,
            coverage=coverage,
            chunk_size=chunk_size,
            margin=margin,
            device=device,
        )
        return out

    @_docs.doc_params(
        image_key=_docs.image_key,
        how=_docs.how,
        coverage=_docs.coverage,
        chunk_size=_docs.chunk_size,
        margin=_docs.margin,
        device=_docs.device,
    )
    def predict_shapes(
        self,
        sdata: SpatialData,
        shapes: str,
        *,
        image_key: str | None = None,
        how: Aggregation = "mean",
        coverage: Coverage = "center",
        chunk_size: int | None = None,
        margin: int | None = None,
        device: str | None = None,
        tile: int | None = None,
        overlap: float | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Predicted expression ``(n_shapes, n_genes)`` for every shape of a shapes element, in its order.

        The dense map aggregated over each footprint, as :meth:`predict_footprints`.

        Parameters
        ----------
        sdata
            SpatialData with the H&E and the shapes.
        shapes
            A shapes element (circles or polygons).
        {image_key}
        {how}
        {coverage}
        {chunk_size}
        {margin}
        {device}
        tile, overlap, batch_size
            Deprecated (blended overlapping tiles); ``tile`` is read as ``chunk_size``.

        Returns
        -------
        Predictions in the shapes' order; NaN for shapes off the image.

        """
        self._check_trained()
        chunk_size = _deprecated_tiling(chunk_size, tile, overlap, batch_size, "predict_shapes")
        image_key = image_key or default_image_key(sdata)
        return self._predict_fp(
            sdata,
            shapes_footprints(sdata, shapes, image_key),
            image_key=image_key,
            how=how,
            coverage=coverage,
            chunk_size=chunk_size,
            margin=margin,
            device=device,
        )
