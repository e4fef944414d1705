"""The spot-level baseline's data and training plan: one square crop per footprint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from spatialdata import SpatialData

from .._core import Footprints, Pyramid, footprint_diameters, get_mpp
from .._progress import tqdm
from ._augment import colour_jitter
from ._tiles import net_loss

__all__ = ["CropPlan", "CropSet", "Cropper", "predict_crops"]


class Cropper:
    """Square windows of an H&E around points, resampled to ``size × size`` pixels.

    Reads through the one window reader (:class:`stpredict._core.Pyramid`): the coarsest pyramid level
    that is at least as fine as the output, white outside the image, bilinear resampling. Keeps the
    levels it used in memory.
    """

    def __init__(self, sdata: SpatialData, image_key: str) -> None:
        self.pyramid = Pyramid.from_sdata(sdata, image_key, cache=True)

    def crop(self, cx: float, cy: float, window: float, size: int) -> np.ndarray:
        """The ``window × window`` full-resolution pixels centred on ``(cx, cy)`` as ``(size, size, 3)`` uint8."""
        half = window / 2
        return self.pyramid.read(
            (cx - half, cy - half, cx + half, cy + half), (size, size), resample="bilinear"
        )


@dataclass
class CropSet:
    """Footprints of one section as crop windows: centres and window sides in full-resolution pixels."""

    cropper: Cropper
    centres: np.ndarray
    windows: np.ndarray
    targets: np.ndarray | None = None
    mpp: float | None = None

    @classmethod
    def from_footprints(
        cls, sdata: SpatialData, image_key: str, fp: Footprints, *, crop_factor: float
    ) -> CropSet:
        """Windows of ``crop_factor`` × each footprint's diameter (full-resolution pixels), without targets."""
        return cls(
            Cropper(sdata, image_key),
            fp.centres,
            crop_factor * footprint_diameters(fp),
            None,
            get_mpp(sdata, image_key),
        )

    def __len__(self) -> int:
        return len(self.centres)

    def crops(
        self, idx: np.ndarray, size: int, rng: np.random.Generator | None = None, jitter: float = 0.1
    ) -> np.ndarray:
        """Crops ``(len(idx), size, size, 3)``; with ``rng``: random shifts (±``jitter`` window), flips, rotations."""
        out = np.empty((len(idx), size, size, 3), np.uint8)
        for k, i in enumerate(idx):
            (cx, cy), w = self.centres[i], self.windows[i]
            if rng is not None:
                cx, cy = cx + rng.uniform(-jitter, jitter) * w, cy + rng.uniform(-jitter, jitter) * w
            c = self.cropper.crop(cx, cy, w, size)
            if rng is not None:
                if rng.integers(2):
                    c = c[:, ::-1]
                c = np.rot90(c, int(rng.integers(4)))
            out[k] = c
        return out


@torch.no_grad()
def predict_crops(
    net, s: CropSet, size: int, device, *, batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    """Predictions ``(len(s), n_genes)`` of a crop regressor for every window of a crop set."""
    net.eval()
    out = np.empty((len(s), net.n_genes), np.float32)
    starts = range(0, len(out), batch_size)
    for i in tqdm(starts, desc="crops", progress=progress, leave=False):
        idx = np.arange(i, min(i + batch_size, len(out)))
        x = torch.from_numpy(s.crops(idx, size)).permute(0, 3, 1, 2).contiguous()
        out[idx] = net(x.to(device)).float().cpu().numpy()
    return out


class CropPlan:
    """How the spot-level baseline learns: random crops of training footprints, one prediction each.

    Implements the training-plan interface of :func:`stpredict.train.fit`.

    Parameters
    ----------
    net
        A :class:`~stpredict.module.SpotRegressorModule`.
    train, val
        Crop sets (with targets) of the training and validation sections.
    size
        Crop side in pixels.
    batch_size
        Crops per step.
    augment
        Random shifts, flips, rotations and colour jitter.
    lam
        Weight of the PCC term of the loss.
    seed
        Seed of the crop sampling and augmentation.
    device
        Where the network runs.
    progress
        Show a progress bar for validation.

    """

    def __init__(
        self,
        net,
        train: Sequence[CropSet],
        val: Sequence[CropSet],
        *,
        size: int,
        batch_size: int,
        augment: bool,
        lam: float,
        seed: int,
        device,
        progress: bool,
    ) -> None:
        self.net = net
        self.train_sets, self.val_sets = list(train), list(val)
        self.pool = np.concatenate(
            [np.c_[np.full(len(s), i), np.arange(len(s))] for i, s in enumerate(train)]
        )
        self.size, self.batch_size, self.augment, self.lam = size, batch_size, augment, lam
        self.loss = net_loss(net, lam=lam)  # the network's loss: training steps and validation alike
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.device, self.progress = device, progress

    @property
    def has_validation(self) -> bool:
        return bool(self.val_sets)

    def on_epoch_start(self) -> None:
        pass

    def training_step(self) -> tuple[torch.Tensor, float]:
        pick = self.pool[self.rng.integers(len(self.pool), size=self.batch_size)]
        crops, ys = [], []
        for i in np.unique(pick[:, 0]):
            idx = pick[pick[:, 0] == i, 1]
            s = self.train_sets[i]
            crops.append(s.crops(idx, self.size, self.rng if self.augment else None))
            ys.append(s.targets[idx])
        x = torch.from_numpy(np.concatenate(crops)).permute(0, 3, 1, 2).contiguous()
        if self.augment:
            x = colour_jitter(x, self.gen)
        loss, parts = self.loss(self.net(x.to(self.device)), torch.from_numpy(np.vstack(ys)).to(self.device))
        return loss, parts["pcc"]

    def validate(self) -> dict[str, float]:
        P = np.vstack(
            [
                predict_crops(self.net, s, self.size, self.device, progress=self.progress)
                for s in self.val_sets
            ]
        )
        Y = np.vstack([s.targets for s in self.val_sets])
        vl, vp = self.loss(torch.from_numpy(P), torch.from_numpy(Y))
        return {"val_loss": float(vl), "val_mse": vp["mse"], "val_pcc": vp["pcc"]}
