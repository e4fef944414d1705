"""Tile sampling, the sparse PixNet loss and the training loop."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from ._aggregate import aggregate_map, footprint_matrix, to_torch_sparse
from ._data import SectionData

__all__ = ["Batch", "TileSampler", "pixnet_loss", "resolve_device"]


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` → CUDA, then Apple MPS, then CPU; also applies :attr:`stpredict.settings.n_jobs` to torch."""
    from .._settings import settings

    if settings.n_jobs is not None and torch.get_num_threads() != settings.n_jobs:
        torch.set_num_threads(settings.n_jobs)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def batch_pcc(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-gene Pearson correlation across the footprints of a batch, ``(M,)``."""
    p = pred - pred.mean(0, keepdim=True)
    t = target - target.mean(0, keepdim=True)
    return (p * t).sum(0) / (p.norm(dim=0) * t.norm(dim=0) + eps)


def pixnet_loss(pred: torch.Tensor, target: torch.Tensor, lam: float = 0.5) -> tuple[torch.Tensor, dict]:
    """``MSE + λ·(1 − mean per-gene PCC)`` over the footprints of a batch (PixNet Eq. 6)."""
    mse = torch.mean((pred - target) ** 2)
    if pred.shape[0] >= 2 and lam:
        pcc = batch_pcc(pred, target).mean()
        loss = mse + lam * (1 - pcc)
    else:
        pcc = torch.zeros((), device=pred.device)
        loss = mse
    return loss, {"mse": float(mse.detach()), "pcc": float(pcc.detach())}


@dataclass
class Batch:
    """Tiles ``(B, 3, T, T)`` uint8, their aggregation matrix ``(n, B*T*T)``, targets ``(n, M)`` and cache keys."""

    images: torch.Tensor
    A: sparse.csr_matrix
    targets: np.ndarray
    keys: list[tuple]
    augment: list[tuple[int, bool]]


def _augment_index(t: int, k: int, flip: bool) -> np.ndarray:
    idx = np.arange(t * t).reshape(t, t)
    if flip:
        idx = idx[:, ::-1]
    return np.rot90(idx, k).ravel()


def _augment_array(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    if flip:
        a = a[:, ::-1]
    return np.ascontiguousarray(np.rot90(a, k))


class TileSampler:
    """Samples training tiles around supervised footprints (so background is not wasted).

    Parameters
    ----------
    sections
        Sections at the training pixel size.
    tile_size
        Tile side in training pixels.
    augment
        Random 90° rotations and flips (image and footprints together).
    snap
        Snap tile origins to a ``tile_size // 2`` grid (used with a frozen encoder, so tiles repeat
        and their features can be cached).
    max_footprints
        At most this many footprints per table and tile (random subset) to bound the step cost.

    """

    def __init__(
        self,
        sections: Sequence[SectionData],
        *,
        tile_size: int,
        augment: bool = True,
        snap: bool = False,
        max_footprints: int = 512,
        coverage: str = "center",
        seed: int = 0,
    ) -> None:
        self.sections = list(sections)
        self.tile = int(tile_size)
        self.augment = augment
        self.snap = snap
        self.max_footprints = max_footprints
        self.coverage = coverage
        self.rng = np.random.default_rng(seed)
        self.pairs = [(s, t) for s, sec in enumerate(self.sections) for t in range(len(sec.footprints))]
        if not self.pairs:
            raise ValueError("No supervised footprint to train on.")

    def _origin(self, sec: SectionData, cx: float, cy: float, jitter: bool) -> tuple[int, int]:
        T = self.tile
        h, w = sec.image.shape[:2]
        j = self.rng.uniform(-T / 4, T / 4, 2) if jitter else np.zeros(2)
        x0, y0 = cx - T / 2 + j[0], cy - T / 2 + j[1]
        if self.snap:
            step = max(1, T // 2)
            x0, y0 = round(x0 / step) * step, round(y0 / step) * step
        x0 = int(np.clip(round(x0), 0, max(0, w - T)))
        y0 = int(np.clip(round(y0), 0, max(0, h - T)))
        return x0, y0

    def tile_image(self, sec: SectionData, x0: int, y0: int) -> np.ndarray:
        """Crop ``T × T`` (padded with white where the image is smaller)."""
        T = self.tile
        crop = sec.image[y0 : y0 + T, x0 : x0 + T]
        if crop.shape[:2] != (T, T):
            out = np.full((T, T, 3), 255, np.uint8)
            out[: crop.shape[0], : crop.shape[1]] = crop
            crop = out
        return crop

    def tile_targets(self, sec: SectionData, x0: int, y0: int, limit: bool = True):
        """Aggregation matrix and targets of every footprint entirely inside the tile."""
        T = self.tile
        mats, ys, ids = [], [], []
        for t, (fp, b) in enumerate(zip(sec.footprints, sec.bounds, strict=True)):
            inside = np.nonzero(
                (b[:, 0] >= x0) & (b[:, 1] >= y0) & (b[:, 2] <= x0 + T) & (b[:, 3] <= y0 + T)
            )[0]
            if limit and inside.size > self.max_footprints:
                inside = self.rng.choice(inside, self.max_footprints, replace=False)
            if inside.size == 0:
                continue
            A, kept = footprint_matrix(fp.subset(inside).shifted(-x0, -y0), (T, T), coverage=self.coverage)
            mats.append(A)
            ys.append(sec.targets[t][inside[kept]])
            ids.append((t, inside[kept]))
        if not mats:
            return None, None, []
        return sparse.vstack(mats).tocsr(), np.vstack(ys), ids

    def sample(self, batch_size: int) -> Batch:
        """A random batch of tiles with at least one footprint each."""
        images, mats, ys, keys, augs = [], [], [], [], []
        tries = 0
        while len(images) < batch_size:
            tries += 1
            if tries > 50 * batch_size:
                raise RuntimeError(
                    "Could not sample tiles that contain a whole footprint; increase tile_size so that footprints "
                    "fit inside a tile."
                )
            s, t = self.pairs[self.rng.integers(len(self.pairs))]
            sec = self.sections[s]
            i = self.rng.integers(len(sec.footprints[t]))
            cx, cy = sec.footprints[t].centres[i]
            x0, y0 = self._origin(sec, cx, cy, jitter=True)
            A, y, _ = self.tile_targets(sec, x0, y0)
            if A is None:
                continue
            img = self.tile_image(sec, x0, y0)
            k, flip = (int(self.rng.integers(4)), bool(self.rng.integers(2))) if self.augment else (0, False)
            if k or flip:
                img = _augment_array(img, k, flip)
                A = A[:, _augment_index(self.tile, k, flip)]
            images.append(img)
            mats.append(A)
            ys.append(y)
            keys.append((s, x0, y0))
            augs.append((k, flip))
        imgs = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        return Batch(imgs, sparse.block_diag(mats, format="csr"), np.vstack(ys), keys, augs)

    def fixed_batches(self, batch_size: int) -> list[Batch]:
        """Deterministic tiles covering every footprint once (for validation)."""
        T = self.tile
        step = max(1, T // 2)
        batches, cur = [], []
        for s, sec in enumerate(self.sections):
            h, w = sec.image.shape[:2]
            done = [np.zeros(len(fp), bool) for fp in sec.footprints]
            for y0 in range(0, max(1, h - T + step), step):
                for x0 in range(0, max(1, w - T + step), step):
                    x0c, y0c = min(x0, max(0, w - T)), min(y0, max(0, h - T))
                    mats, ys = [], []
                    for t, (fp, b) in enumerate(zip(sec.footprints, sec.bounds, strict=True)):
                        inside = np.nonzero(
                            ~done[t]
                            & (b[:, 0] >= x0c)
                            & (b[:, 1] >= y0c)
                            & (b[:, 2] <= x0c + T)
                            & (b[:, 3] <= y0c + T)
                        )[0]
                        if inside.size == 0:
                            continue
                        A, kept = footprint_matrix(
                            fp.subset(inside).shifted(-x0c, -y0c), (T, T), coverage=self.coverage
                        )
                        done[t][inside[kept]] = True
                        mats.append(A)
                        ys.append(sec.targets[t][inside[kept]])
                    if mats:
                        cur.append(
                            (
                                self.tile_image(sec, x0c, y0c),
                                sparse.vstack(mats).tocsr(),
                                np.vstack(ys),
                                (s, x0c, y0c),
                            )
                        )
                    if len(cur) == batch_size:
                        batches.append(cur)
                        cur = []
        if cur:
            batches.append(cur)
        out = []
        for b in batches:
            imgs = torch.from_numpy(np.stack([c[0] for c in b])).permute(0, 3, 1, 2).contiguous()
            out.append(
                Batch(
                    imgs,
                    sparse.block_diag([c[1] for c in b], format="csr"),
                    np.vstack([c[2] for c in b]),
                    [c[3] for c in b],
                    [(0, False)] * len(b),
                )
            )
        return out


def colour_jitter(images: torch.Tensor, gen: torch.Generator, strength: float = 0.05) -> torch.Tensor:
    """Light H&E colour augmentation: per-tile, per-channel gain and a brightness shift (uint8 in, uint8 out)."""
    b = images.shape[0]
    gain = 1 + strength * torch.randn(b, 3, 1, 1, generator=gen)
    shift = 255 * strength * 0.5 * torch.randn(b, 1, 1, 1, generator=gen)
    return (images.float() * gain + shift).clamp(0, 255).round().to(torch.uint8)


class FeatureCache:
    """LRU cache of frozen-encoder feature pyramids keyed by tile."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key):
        if key in self.data:
            self.data.move_to_end(key)
            self.hits += 1
            return self.data[key]
        self.misses += 1
        return None

    def put(self, key, value) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.size:
            self.data.popitem(last=False)


def augment_features(feats: list[torch.Tensor], k: int, flip: bool) -> list[torch.Tensor]:
    """Apply the tile's flip / rotation to cached feature maps (same convention as the image)."""
    out = []
    for f in feats:
        if flip:
            f = torch.flip(f, dims=(-1,))
        out.append(torch.rot90(f, k, dims=(-2, -1)))
    return out


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
        G = net.decode(feats, (T, T))
    else:
        imgs = batch.images
        if jitter_gen is not None:
            imgs = colour_jitter(imgs, jitter_gen)
        G = net(imgs.to(device))
    A = to_torch_sparse(batch.A, device=device)
    return aggregate_map(G, A)


def fit_epochs(
    model,
    net,
    opt,
    step: Callable[[], tuple[float, float]],
    validate: Callable[[], dict] | None,
    *,
    max_epochs: int,
    steps_per_epoch: int,
    patience: int | None,
    progress: bool,
    on_train_start: Callable[[], None] | None = None,
) -> list[dict]:
    """The epoch loop every trained model shares: steps, per-epoch record, validation, early stopping.

    ``step()`` runs one optimiser step and returns ``(loss, batch PCC)``; ``validate()`` returns
    ``{"val_loss", ...}``. Records go to ``model.history``; the optimiser state to
    ``model.optimizer_state``; with ``patience`` the best validation state is restored at the end.
    """
    from tqdm.auto import tqdm

    best, best_state, bad = np.inf, None, 0
    history = []
    start_epoch = len(model.history)
    for epoch in range(max_epochs):
        net.train()
        if on_train_start is not None:
            on_train_start()
        t0 = time.perf_counter()
        losses, pccs = [], []
        bar = tqdm(
            range(steps_per_epoch), desc=f"epoch {start_epoch + epoch + 1}", disable=not progress, leave=False
        )
        for _ in bar:
            loss, pcc = step()
            losses.append(loss)
            pccs.append(pcc)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        rec = {
            "epoch": start_epoch + epoch + 1,
            "train_loss": float(np.mean(losses)),
            "train_pcc": float(np.mean(pccs)),
            "seconds": time.perf_counter() - t0,
        }
        if validate is not None:
            rec.update(validate())
        history.append(rec)
        model.history.append(rec)
        model.optimizer_state = opt.state_dict()
        if validate is not None and patience is not None:
            if rec["val_loss"] < best - 1e-6:
                best, bad = rec["val_loss"], 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                bad += 1
                if bad >= patience:
                    break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return history


def train_loop(
    model,
    sampler: TileSampler,
    val_batches: list[Batch] | None,
    *,
    device: torch.device,
    max_epochs: int,
    steps_per_epoch: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    lam: float,
    patience: int | None,
    colour_augment: bool,
    progress: bool,
    feature_cache_size: int,
    seed: int,
    optimizer_state: dict | None = None,
) -> list[dict]:
    """Train ``model.module`` in place; returns the per-epoch history (also appended to ``model.history``)."""
    net = model.module.to(device)
    frozen = model.freeze_encoder
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    cache = FeatureCache(feature_cache_size) if frozen else None
    gen = torch.Generator().manual_seed(seed)

    def step() -> tuple[float, float]:
        batch = sampler.sample(batch_size)
        pred = run_batch(
            net, batch, device, cache=cache, frozen=frozen, jitter_gen=gen if colour_augment else None
        )
        loss, parts = pixnet_loss(pred, torch.from_numpy(batch.targets).to(device), lam)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach()), parts["pcc"]

    def validate() -> dict:
        return evaluate_batches(net, val_batches, device, frozen=frozen, lam=lam)

    history = fit_epochs(
        model,
        net,
        opt,
        step,
        validate if val_batches else None,
        max_epochs=max_epochs,
        steps_per_epoch=steps_per_epoch,
        patience=patience,
        progress=progress,
        on_train_start=net.encoder.eval if frozen else None,
    )
    if cache is not None:
        model.feature_cache_stats = {"hits": cache.hits, "misses": cache.misses, "size": len(cache.data)}
    return history


@torch.no_grad()
def evaluate_batches(net, batches: list[Batch], device, *, frozen: bool, lam: float) -> dict:
    """Loss, MSE and mean per-gene PCC over all footprints of fixed batches."""
    net.eval()
    preds, ys = [], []
    for b in batches:
        preds.append(run_batch(net, b, device, cache=None, frozen=False).cpu())
        ys.append(torch.from_numpy(b.targets))
    p, y = torch.cat(preds), torch.cat(ys)
    loss, parts = pixnet_loss(p, y, lam)
    return {"val_loss": float(loss), "val_mse": parts["mse"], "val_pcc": parts["pcc"]}
