"""Why does PixNet trail the spot baseline? Ablations on an inner HER2ST split (CPU, minutes per row).

Settings are chosen here, never on a reported leave-one-section-out fold: train on the sections of
``--train`` (default C2, C3), score the spots of ``--val`` (default C4) against their measured
expression, with the same 250 genes (chosen on the training sections), seed and scoring as
``benchmarks/her2st.py``. Each named configuration below is a set of ``tl.train`` arguments on top
of the ``cpu`` preset; ``--encoder-weights`` (e.g. from ``tl.pretrain_encoder`` on the training
sections' images) is passed to every row::

    python benchmarks/her2st_ablation.py --data-dir ../shared/data/her2st --configs spot,pixnet,pixnet_4um

For nested selection, each leave-one-section-out fold gets an inner split of its own three training
sections (two to train, one to validate), so that no fold's choice reads its test section::

    python benchmarks/her2st_ablation.py --configs pixnet_4um,pixnet --train C3,C4 --val C5   # for fold C2

With ``--flips``, every trained model is also scored with test-time flips (the mean of its
predictions for the image and its horizontal, vertical and both-ways flips; a dense map is flipped
back before it is averaged), at no extra training cost, as a row ``<config>+flips``.

Rows are appended to ``--out`` (CSV) and printed as a markdown table of everything in it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import torch

import stpredict as stp

#: The configurations, fixed before any run (``tl.train`` arguments on top of ``preset="cpu"``).
CONFIGS: dict[str, dict] = {
    # the baselines at their presets (2 µm/px)
    "spot": {"model": "spot_regressor"},
    "probe": {"model": "linear_probe"},
    # PixNet's cpu preset: 2 µm/px, 4 tiles of 192 px (384 µm) per step
    "pixnet": {"model": "pixnet"},
    # coarser pixels: the same cost buys 3.6x the tissue area (and spots) per step
    "pixnet_4um": {"model": "pixnet", "train_mpp": 4.0, "tile_size": 128, "batch_size": 8},
    # coarser pixels at a quarter of the cost per step
    "pixnet_4um_small": {"model": "pixnet", "train_mpp": 4.0, "tile_size": 96, "batch_size": 4},
    # bigger tiles at 2 µm/px: more spots per tile, fewer cut by tile edges
    "pixnet_256": {"model": "pixnet", "tile_size": 256},
    # supervised spots keep 64 µm of context from the tile edges
    "pixnet_4um_context": {
        "model": "pixnet",
        "train_mpp": 4.0,
        "tile_size": 128,
        "batch_size": 8,
        "context": 16,
    },
    # the encoder frozen (features cached), three times the steps
    "pixnet_4um_frozen": {
        "model": "pixnet",
        "train_mpp": 4.0,
        "tile_size": 128,
        "batch_size": 8,
        "freeze_encoder": True,
        "max_epochs": 30,
    },
    "probe_4um": {"model": "linear_probe", "train_mpp": 4.0, "tile_size": 128},
    # exponential moving average of the weights (decay 0.99 per step): the last epoch's weights vary a lot
    "pixnet_4um_ema": {"model": "pixnet", "train_mpp": 4.0, "tile_size": 128, "batch_size": 8, "ema": 0.99},
    "spot_ema": {"model": "spot_regressor", "ema": 0.99},
    # a cosine decay of the learning rate over the 500 steps (lr → lr / 100), with the average
    "pixnet_4um_ema_cos": {
        "model": "pixnet",
        "train_mpp": 4.0,
        "tile_size": 128,
        "batch_size": 8,
        "ema": 0.99,
        "lr_schedule": "cosine",
    },
    "spot_ema_cos": {"model": "spot_regressor", "ema": 0.99, "lr_schedule": "cosine"},
}


class Flips(torch.nn.Module):
    """A network averaged over the four flips of its input (dense outputs flipped back first)."""

    def __init__(self, net: torch.nn.Module, dense: bool) -> None:
        super().__init__()
        self.net, self.dense = net, dense
        self.n_genes = net.n_genes
        if dense:
            self.stride = net.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = 0
        for dims in ((), (-1,), (-2,), (-2, -1)):
            y = self.net(torch.flip(x, dims) if dims else x)
            out = out + (torch.flip(y, dims) if dims and self.dense else y)
        return out / 4


def score(model, sd, args) -> tuple[pd.Series, float]:
    """Predict the validation section's spots and score them; the scores and the prediction time."""
    t1 = time.perf_counter()
    stp.tl.predict_shapes(sd, model, shapes=f"{args.val}_spots", key_added="ablation", overwrite=True)
    t_pred = time.perf_counter() - t1
    _, s = stp.tl.evaluate(sd, pred=f"ablation_{args.val}_spots", truth="spots", seed=args.seed)
    return s.loc[args.val], t_pred


def run(name: str, sections: dict, args) -> list[dict]:
    cfg = dict(CONFIGS[name])
    if args.encoder_weights:
        cfg["encoder_weights"] = args.encoder_weights
    if cfg["model"] != "linear_probe":
        cfg.setdefault("max_epochs", args.epochs)
        cfg.setdefault("steps_per_epoch", args.steps)
    train = [sections[s] for s in args.train]
    sd = sections[args.val]
    t0 = time.perf_counter()
    model = stp.tl.train(
        train, tables="spots", preset="cpu", n_top_genes=args.genes, seed=args.seed, progress=False, **cfg
    )
    t_train = time.perf_counter() - t0
    rows = []
    for flips in (False, True) if args.flips else (False,):
        net = model.module
        if flips:
            model.module = Flips(net, dense=cfg["model"] != "spot_regressor")
        try:
            s, t_pred = score(model, sd, args)
        finally:
            model.module = net
        rows.append(row(name + ("+flips" if flips else ""), cfg, s, t_train, t_pred, args))
    return rows


def row(name: str, cfg: dict, s: pd.Series, t_train: float, t_pred: float, args) -> dict:
    """One CSV row."""
    return {
        "config": name,
        "encoder_weights": args.encoder_weights or "random init",
        "train": "+".join(args.train),
        "val": args.val,
        "PCC@F": float(s["PCC@F"]),
        "PCC@S": float(s["PCC@S"]),
        "PCC@M": float(s["PCC@M"]),
        "MSE": float(s["MSE"]),
        "train_s": round(t_train, 1),
        "predict_s": round(t_pred, 1),
        "steps": int(cfg.get("max_epochs", 0)) * int(cfg.get("steps_per_epoch", 0)),
        "args": json.dumps({k: v for k, v in cfg.items() if k != "encoder_weights"}),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/her2st")
    ap.add_argument(
        "--configs", default="spot,pixnet,pixnet_4um", help=f"comma-separated, of {sorted(CONFIGS)}"
    )
    ap.add_argument("--train", default="C2,C3")
    ap.add_argument("--val", default="C4")
    ap.add_argument("--encoder-weights", default=None, help="local encoder weights for every row")
    ap.add_argument("--genes", type=int, default=250)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flips", action="store_true", help="also score each model with test-time flips")
    ap.add_argument("--downsample", type=int, default=1, help="read images downsampled (quick checks only)")
    ap.add_argument("--out", default="benchmarks/results/her2st_ablation.csv")
    args = ap.parse_args()
    args.train = [s.strip() for s in args.train.split(",") if s.strip()]
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        ap.error(f"unknown configs {unknown}; known: {sorted(CONFIGS)}")
    if args.val in args.train:
        ap.error("--val must not be a training section.")
    sections = {
        s: stp.datasets.her2st(s, data_dir=args.data_dir, downsample=args.downsample)
        for s in [*args.train, args.val]
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        rows = run(name, sections, args)
        for r in rows:
            print(
                f"{r['config']}: PCC@M {r['PCC@M']:.3f}, MSE {r['MSE']:.3f}, train {r['train_s']:.0f} s, "
                f"predict {r['predict_s']:.1f} s",
                flush=True,
            )
        pd.DataFrame(rows).to_csv(out, mode="a", header=not out.exists(), index=False)
    df = pd.read_csv(out)
    cols = [
        "config",
        "encoder_weights",
        "train",
        "val",
        "PCC@F",
        "PCC@S",
        "PCC@M",
        "MSE",
        "train_s",
        "predict_s",
        "steps",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df[cols].iterrows():
        cells = [
            f"{v:.0f}"
            if c in ("train_s", "predict_s", "steps")
            else (f"{v:.3f}" if isinstance(v, float) else str(v))
            for c, v in r.items()
        ]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
