"""PixNet's training plan: tiles sampled around supervised footprints, sparse loss on the dense map.

The tiles and their footprints are drawn by :class:`~stpredict.train.TileSampler` (``_sampling.py``); here they run
through the network, are aggregated to footprint means and scored by the loss the network owns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import sparse

from .._progress import tqdm
from .._types import Coverage, TableWeighting, check_choice
from ..module import aggregate_map, bilinear_matrix, to_torch_sparse
from ..module._loss import MSEPCC, Loss
from ._augment import augment_features, colour_jitter
from ._data import SectionData
from ._distributed import Distributed
from ._sampling import Batch, FeatureCache, TileSampler, footprint_extents, tile_holding

__all__ = [
    "Batch",
    "FeatureCache",
    "TilePlan",
    "TileSampler",
    "batch_loss",
    "evaluate_batches",
    "footprint_extents",
    "net_loss",
    "run_batch",
    "score_batch",
    "tile_holding",
]


def _is_rate(net) -> bool:
    return getattr(net, "map_space", "log") == "rate"


def _on_grid(A: sparse.csr_matrix, shape, out_size, tile: int, device) -> torch.Tensor:
    """``A`` (footprints × tile pixels) composed with the bilinear resize from a ``(b, ·, h, w)`` grid."""
    b, _, h, w = shape
    K = bilinear_matrix((h, w), out_size, crop=(tile, tile))
    return to_torch_sparse(A @ sparse.block_diag([K] * b, format="csr"), device=device)


def _footprint_means(net, feats: list[torch.Tensor], A: sparse.csr_matrix, out_size, tile: int, device):
    """Footprint predictions ``(n, M)`` of decoded features: the map's means over ``A``'s footprints.

    When the head and the resize are linear (:attr:`~stpredict.module.PixNetModule.linear_output`),
    the means are taken of the last decoder features on their own grid (``A`` composed with the
    bilinear resize) and the 1×1 head is applied to the ``n`` means: the same numbers as aggregating
    the full-resolution ``M``-gene map, without computing it. With ``map_space="rate"`` the result is
    each footprint's mean *rate* (the rate map on the decoder grid, aggregated through the same
    composed matrix, so also exact), not its log.
    """
    if _is_rate(net):
        rho = net.rates(feats)
        return aggregate_map(rho, _on_grid(A, rho.shape, out_size, tile, device))
    if getattr(net, "linear_output", False):
        D = net.decode_features(feats)
        c = D.shape[1]
        pooled = aggregate_map(D, _on_grid(A, D.shape, out_size, tile, device))
        weight = net.head.weight.view(net.head.out_channels, c)
        return net.activation(pooled @ weight.T + net.head.bias)
    G = net.decode(feats, out_size)[..., :tile, :tile]
    return aggregate_map(G, to_torch_sparse(A, device=device))


def net_loss(net, *, lam: float, weighting: str = "pooled", target_sum: float = 1e4) -> Loss:
    """The loss ``net`` owns (``net.loss()``), with these settings; :class:`~stpredict.module.MSEPCC` for others."""
    make = getattr(net, "loss", None)
    if callable(make):
        return make(lam=lam, weighting=weighting, target_sum=target_sum)
    return MSEPCC(lam=lam, weighting=weighting, target_sum=target_sum)


def score_batch(
    loss: Loss, out: torch.Tensor, batches: Batch | Sequence[Batch], device
) -> tuple[torch.Tensor, dict]:
    """``loss`` of the footprint predictions ``out`` ``(n, M)`` of one batch or of several batches, in order.

    The targets, tables (``groups``) and, for a count likelihood, the raw counts and totals come from the batches.
    """
    bs = [batches] if isinstance(batches, Batch) else list(batches)

    def rows(field: str) -> torch.Tensor | None:
        parts = [getattr(b, field) for b in bs]
        if any(p is None for p in parts):
            return None
        return torch.from_numpy(np.concatenate(parts)).to(device)

    counts, library = (rows("counts"), rows("library")) if loss.needs_counts else (None, None)
    groups = rows("groups") if loss.weighting == "equal" else None
    # the loss itself refuses a count likelihood without counts
    return loss(out, rows("targets"), groups=groups, counts=counts, library=library)


def batch_loss(
    net,
    out: torch.Tensor,
    batch: Batch,
    device,
    *,
    lam: float,
    weighting: str = "pooled",
    target_sum: float = 1e4,
) -> tuple[torch.Tensor, dict]:
    """The loss ``net`` owns (:func:`net_loss`) of one batch from :func:`run_batch`'s output (:func:`score_batch`)."""
    return score_batch(net_loss(net, lam=lam, weighting=weighting, target_sum=target_sum), out, batch, device)


def run_batch(net, batch: Batch, device, *, cache: FeatureCache | None, frozen: bool, jitter_gen=None):
    """Forward one batch and aggregate to footprint predictions ``(n, M)``."""
    T = batch.images.shape[-1]
    if frozen:
        feats_list = []
        for i, key in enumerate(batch.keys):
            feats = cache.get(key) if cache is not None else None
            if feats is None:
                # cached features are of the un-augmented tile
                k, flip = batch.augment[i]
                img = batch.images[i : i + 1]
                if k or flip:
                    img = torch.rot90(img, -k, dims=(-2, -1))
                    if flip:
                        img = torch.flip(img, dims=(-1,))
                with torch.no_grad():
                    feats = [f.detach() for f in net.encode(img.to(device))]
                if cache is not None:
                    cache.put(key, feats)
            feats_list.append(augment_features(feats, *batch.augment[i]))
        feats = [torch.cat([fl[j] for fl in feats_list]) for j in range(len(feats_list[0]))]
        return _footprint_means(net, feats, batch.A, (T, T), T, device)
    imgs = batch.images
    if jitter_gen is not None:
        imgs = colour_jitter(imgs, jitter_gen)
    feats, padded = net.encoder.pyramid(imgs.to(device))
    return _footprint_means(net, feats, batch.A, padded, T, device)


@torch.no_grad()
def evaluate_batches(
    net,
    batches: list[Batch],
    device,
    *,
    lam: float | None = None,
    loss: Loss | None = None,
    progress: bool = False,
    dist: Distributed | None = None,
) -> dict:
    """The training loss (``loss``, else the one ``net`` owns with ``lam``), MSE and mean per-gene PCC of fixed batches.

    The loss is the one the training steps call, over the footprints of all batches (one pooled group, or one per
    table with ``weighting="equal"``). With ``dist`` each rank runs its share of the batches and the predictions of
    all are gathered, so every rank returns the metrics of all batches.
    """
    if loss is None:
        loss = net_loss(net, lam=0.5 if lam is None else lam)
    net.eval()
    mine = batches[dist.share(len(batches))] if dist is not None else batches
    preds = [
        run_batch(net, b, device, cache=None, frozen=False)
        for b in tqdm(mine, desc="validation", progress=progress, leave=False)
    ]
    if dist is not None:
        local = torch.cat(preds) if preds else torch.zeros((0, batches[0].targets.shape[1]), device=device)
        p = dist.gather_rows(local, dist.sizes([len(b.targets) for b in batches])).cpu()
    else:
        p = torch.cat(preds).cpu()
    value, parts = score_batch(loss, p, batches, "cpu")
    return {"val_loss": float(value), "val_mse": parts["mse"], "val_pcc": parts["pcc"]}


class TilePlan:
    """How PixNet learns: tiles around footprints, the dense map aggregated over each footprint.

    Implements the training-plan interface of :func:`stpredict.train.fit`.

    Parameters
    ----------
    net
        A :class:`~stpredict.module.PixNetModule` (or any module with ``encode``/``decode`` and a
        dense ``forward``).
    train, val
        Training and validation sections at the training pixel size.
    tile_size, batch_size, augment, max_footprints, coverage, context, seed
        Sampling (see :class:`TileSampler`); ``batch_size`` tiles per step.
    frozen
        The encoder is frozen: snap tiles to a grid and cache their encoder features.
    feature_cache_size
        Tiles whose features are cached when ``frozen``.
    lam
        Weight of the PCC term of the loss.
    weighting
        ``"pooled"``: one loss over the footprints of every table (Eq. 6 over the batch); ``"equal"``:
        one loss per table (footprint size), averaged (:func:`batch_loss`).
    target_sum
        The recipe's normalisation target (the unit of a rate map's rates).
    device
        Where the network runs.
    progress
        Show a progress bar for validation.
    dist
        Data-parallel training (``torchrun``): every rank samples the same global batch of
        ``batch_size`` tiles, runs its share, and computes the loss of the whole batch from the gathered
        predictions (:class:`~stpredict.train.Distributed`); validation batches are shared out likewise.

    """

    def __init__(
        self,
        net,
        train: Sequence[SectionData],
        val: Sequence[SectionData],
        *,
        tile_size: int,
        batch_size: int,
        augment: bool,
        frozen: bool,
        max_footprints: int,
        coverage: Coverage,
        context: int = 0,
        feature_cache_size: int,
        lam: float,
        seed: int,
        device,
        progress: bool,
        weighting: str = "pooled",
        target_sum: float = 1e4,
        dist: Distributed | None = None,
    ) -> None:
        check_choice("table_weighting", weighting, TableWeighting)
        if dist is not None and batch_size < dist.world:
            raise ValueError(
                f"batch_size ({batch_size} tiles per step, the global batch) must be at least the number of "
                f"processes ({dist.world}) in data-parallel training."
            )
        self.net = net
        self.dist = dist
        self.weighting = weighting
        self.target_sum = target_sum
        self.sampler = TileSampler(
            train,
            tile_size=tile_size,
            augment=augment,
            snap=frozen,
            max_footprints=max_footprints,
            coverage=coverage,
            context=context,
            seed=seed,
            require_fit=True,
        )
        self.val_batches = (
            TileSampler(val, tile_size=tile_size, augment=False, coverage=coverage, seed=seed).fixed_batches(
                batch_size
            )
            if val
            else []
        )
        if val and not self.val_batches:
            raise ValueError(
                f"No footprint of the validation section(s) {[sec.name for sec in val]} fits in a {tile_size} px tile: "
                "there is nothing to score. Raise `tile_size`, or hold out another section with `validation=`."
            )
        self.batch_size = batch_size
        self.frozen = frozen
        self.cache = FeatureCache(feature_cache_size) if frozen else None
        self.colour = augment and not frozen
        self.gen = torch.Generator().manual_seed(seed)
        self.lam = lam
        self.device = device
        self.progress = progress
        #: the loss the network owns: the training steps and validation call it alike
        self.loss = net_loss(net, lam=lam, weighting=weighting, target_sum=target_sum)

    @property
    def has_validation(self) -> bool:
        return bool(self.val_batches)

    def on_epoch_start(self) -> None:
        if self.frozen:
            self.net.encoder.eval()

    def training_step(self) -> tuple[torch.Tensor, float]:
        batch = self.sampler.sample(self.batch_size)
        if self.dist is None:
            pred = run_batch(
                self.net,
                batch,
                self.device,
                cache=self.cache,
                frozen=self.frozen,
                jitter_gen=self.gen if self.colour else None,
            )
        else:  # the whole batch's jitter (one draw, as alone), this rank's tiles, every rank's predictions
            if self.colour:
                batch.images = colour_jitter(batch.images, self.gen)
            mine = batch.tiles(self.dist.share(self.batch_size))
            local = run_batch(self.net, mine, self.device, cache=self.cache, frozen=self.frozen)
            pred = self.dist.gather_rows(local, self.dist.sizes(batch.tile_rows))
        loss, parts = score_batch(self.loss, pred, batch, self.device)
        return loss, parts["pcc"]

    def validate(self) -> dict[str, float]:
        return evaluate_batches(
            self.net, self.val_batches, self.device, loss=self.loss, progress=self.progress, dist=self.dist
        )
