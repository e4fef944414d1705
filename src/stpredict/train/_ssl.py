"""Self-supervised encoder pretraining on H&E tiles: SimSiam, H&E augmentations, a resumable loop.

SimSiam (Chen & He, CVPR 2021) learns by making two augmented views of one tile agree, with a
predictor head and a stop-gradient instead of negative pairs or a momentum encoder. That makes it
the cheapest of the Siamese methods (one encoder, two views, no queue) and, unlike contrastive
methods, it does not need large batches: the paper loses little between batch 64 and 1024, which
is what a CPU and a few thousand tiles allow. Collapse (all tiles mapped to one vector) is watched
through the standard deviation of the normalised projections, reported as ``z_std`` (about
``1/sqrt(dim)`` when healthy, 0 when collapsed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._progress import tqdm
from ..module import Encoder

__all__ = ["SimSiam", "he_augment", "hed_jitter", "pretrain_simsiam"]

# Ruifrok & Johnston's stain vectors (as skimage.color.rgb2hed): rows are haematoxylin, eosin, DAB
# in optical density; their inverse takes optical density to stain concentrations.
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)


def hed_jitter(x: torch.Tensor, gen: torch.Generator, sigma: float = 0.05) -> torch.Tensor:
    """Stain augmentation in HED space (Tellez et al., 2018): ``s' = s·α + β`` per image and stain.

    ``x`` is ``(B, 3, H, W)`` RGB in [0, 1]; ``α ~ U(1 − σ, 1 + σ)``, ``β ~ U(−σ, σ)`` (optical density).
    """
    b = x.shape[0]
    od = -torch.log(x.clamp_min(1.0 / 255.0))
    stains = torch.einsum("bchw,cd->bdhw", od, _HED_FROM_RGB)
    alpha = 1 + sigma * (2 * torch.rand(b, 3, 1, 1, generator=gen) - 1)
    beta = sigma * (2 * torch.rand(b, 3, 1, 1, generator=gen) - 1)
    od = torch.einsum("bdhw,dc->bchw", stains * alpha + beta, _RGB_FROM_HED)
    return torch.exp(-od).clamp(0, 1)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(2 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k, groups=3)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.transpose(-1, -2), groups=3)


def he_augment(
    tiles: torch.Tensor,
    gen: torch.Generator,
    size: int,
    *,
    hed: float = 0.05,
    brightness: float = 0.1,
    contrast: float = 0.1,
    saturation: float = 0.1,
    blur: float = 0.5,
) -> torch.Tensor:
    """One random H&E view of each tile: crop, dihedral turn, stain, colour and blur jitter.

    Parameters
    ----------
    tiles
        ``(B, 3, P, P)`` uint8 tiles, ``P ≥ size``.
    gen
        Random generator (the views are a function of its state).
    size
        Side of the views; each is a random ``size × size`` window of its tile (no rescaling, so the
        pixel size the encoder learns at is the one it will be used at).
    hed
        Strength ``σ`` of :func:`hed_jitter`.
    brightness, contrast, saturation
        Maximum relative change of each.
    blur
        Probability of a Gaussian blur with σ ~ U(0.1, 1) px.

    Returns
    -------
    ``(B, 3, size, size)`` float RGB in [0, 1].

    """
    b, _, p, q = tiles.shape
    if min(p, q) < size:
        raise ValueError(f"Tiles of {p}x{q} px are smaller than the view size {size}.")
    out = torch.empty(b, 3, size, size)
    for i in range(b):
        y0 = int(torch.randint(p - size + 1, (1,), generator=gen))
        x0 = int(torch.randint(q - size + 1, (1,), generator=gen))
        v = tiles[i, :, y0 : y0 + size, x0 : x0 + size].float() / 255.0
        k = int(torch.randint(4, (1,), generator=gen))
        if bool(torch.randint(2, (1,), generator=gen)):
            v = torch.flip(v, dims=(-1,))
        out[i] = torch.rot90(v, k, dims=(-2, -1))
    x = hed_jitter(out, gen, hed) if hed > 0 else out

    def u(s: float) -> torch.Tensor:
        return 1 + s * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)

    x = x * u(brightness)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(contrast) + mean
    grey = x.mean(dim=1, keepdim=True)
    x = ((x - grey) * u(saturation) + grey).clamp(0, 1)
    do_blur = torch.rand(b, generator=gen) < blur
    sig = 0.1 + 0.9 * torch.rand(b, generator=gen)
    for i in np.nonzero(do_blur.numpy())[0]:
        x[i : i + 1] = _blur(x[i : i + 1], float(sig[i]))
    return x


class SimSiam(nn.Module):
    """An encoder with SimSiam's projector and predictor heads.

    Parameters
    ----------
    encoder
        The :class:`~stpredict.module.Encoder` to pretrain; its coarsest features, averaged over
        the view, are the representation.
    dim, pred_dim
        Projection width and predictor bottleneck (the paper: 2048 and 512; smaller here for CPUs).

    """

    def __init__(self, encoder: Encoder, dim: int = 512, pred_dim: int = 128) -> None:
        super().__init__()
        self.encoder = encoder
        c = encoder.channels[-1]
        self.projector = nn.Sequential(
            nn.Linear(c, dim, bias=False),
            nn.BatchNorm1d(dim),
            nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False),
            nn.BatchNorm1d(dim),
            nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False),
            nn.BatchNorm1d(dim, affine=False),
        )
        self.predictor = nn.Sequential(
            nn.Linear(dim, pred_dim, bias=False),
            nn.BatchNorm1d(pred_dim),
            nn.ReLU(inplace=True),
            nn.Linear(pred_dim, dim),
        )

    def represent(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled coarsest encoder features of RGB views in [0, 1]."""
        return self.encoder(self.encoder.normalize(x))[-1].mean(dim=(-2, -1))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Symmetrised negative cosine loss of two views, and the collapse indicator ``z_std``."""
        z1, z2 = self.projector(self.represent(x1)), self.projector(self.represent(x2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = -0.5 * (
            F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean()
        )
        z_std = float(F.normalize(z1.detach(), dim=1).std(dim=0).mean())
        return loss, z_std


def pretrain_simsiam(
    net: SimSiam,
    tiles: np.ndarray,
    *,
    view_size: int,
    max_epochs: int,
    steps_per_epoch: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    state: dict | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    augment_kwargs: dict | None = None,
) -> list[dict]:
    """Train ``net`` on random pairs of views of ``tiles``; resumable from ``state``.

    AdamW with a cosine learning-rate decay over ``max_epochs × steps_per_epoch`` steps (the
    predictor keeps a constant rate, as in the paper). After each epoch ``on_epoch_end`` receives the
    resumable state: network, optimiser, the random generators, the history. Passing that ``state``
    back continues at the next epoch and gives the same weights as an uninterrupted run.

    Parameters
    ----------
    net
        The SimSiam network (trained in place).
    tiles
        ``(N, P, P, 3)`` uint8 tissue tiles.
    view_size
        Side of each view (≤ ``P``).
    max_epochs, steps_per_epoch, batch_size, lr, weight_decay
        The schedule: epochs in total (including those in ``state``), steps per epoch, tiles per
        step, peak learning rate and AdamW's decoupled weight decay.
    seed
        Seed of the tile sampling and the augmentations.
    state
        What ``on_epoch_end`` received, to resume.
    on_epoch_end
        Called with the state after every epoch (save it to resume an interrupted run).
    device
        Where the network runs.
    progress
        Show an epoch bar with the loss and ``z_std``.
    augment_kwargs
        Passed to :func:`he_augment`.

    Returns
    -------
    The history: one record per epoch (``epoch``, ``loss``, ``z_std``, ``lr``, ``seconds``).

    """
    device = torch.device(device)
    net.to(device)
    data = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2)
    enc_params = [p for n, p in net.named_parameters() if not n.startswith("predictor.")]
    opt = torch.optim.AdamW(
        [
            {"params": enc_params, "fixed": False},
            {"params": list(net.predictor.parameters()), "fixed": True},
        ],
        lr=lr,
        weight_decay=weight_decay,
        foreach=True,
    )
    gen = torch.Generator().manual_seed(int(seed))
    history: list[dict] = []
    if state is not None:
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        history = list(state["history"])
    total = max_epochs * steps_per_epoch
    augment_kwargs = dict(augment_kwargs or {})
    epochs = tqdm(
        range(len(history), max_epochs),
        desc="self-supervised pretraining",
        progress=progress,
        unit="epoch",
        initial=len(history),
        total=max_epochs,
    )
    try:
        for epoch in epochs:
            net.train()
            t0 = time.perf_counter()
            losses, stds = [], []
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}", progress=progress, leave=False)
            for step in bar:
                it = epoch * steps_per_epoch + step
                rate = lr * 0.5 * (1 + math.cos(math.pi * it / total))
                for g in opt.param_groups:
                    g["lr"] = lr if g["fixed"] else rate
                idx = torch.randint(len(data), (batch_size,), generator=gen)
                batch = data[idx]
                x1 = he_augment(batch, gen, view_size, **augment_kwargs).to(device)
                x2 = he_augment(batch, gen, view_size, **augment_kwargs).to(device)
                loss, z_std = net(x1, x2)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                stds.append(z_std)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", z_std=f"{np.mean(stds[-20:]):.3f}")
            rec = {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                "z_std": float(np.mean(stds)),
                "lr": rate,
                "seconds": time.perf_counter() - t0,
            }
            history.append(rec)
            epochs.set_postfix(loss=f"{rec['loss']:.4f}", z_std=f"{rec['z_std']:.3f}", refresh=False)
            if on_epoch_end is not None:
                on_epoch_end(
                    {
                        "net": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
                        "optimizer": opt.state_dict(),
                        "generator": gen.get_state(),
                        "history": list(history),
                    }
                )
    finally:
        epochs.close()
        net.eval()
        net.cpu()
    return history
