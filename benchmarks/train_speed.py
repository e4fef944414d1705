"""Seconds per PixNet training step and tiles per second on the current device.

Configurations: the ``paper`` preset (512-wide decoder) and the ``cpu`` preset (64-wide), each with a
fine-tuned and a frozen encoder, at two tile sizes. Data: the synthetic slide, supervised by 8 µm bins.

    python benchmarks/train_speed.py [--steps 5] [--tiles 128 256] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

import stpredict as stp
from stpredict.model import PRESETS, PixNet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--tiles", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    stp.settings.verbosity = 1
    slide = stp.datasets.synthetic(
        width_um=1200, height_um=1008, n_genes=50, seed=0, visium_spots=False, st_spots=False
    )
    rows = []
    for preset in ("paper", "cpu"):
        for frozen in (False, True):
            for tile in args.tiles:
                model = PixNet(
                    decoder_channels=PRESETS[preset]["decoder_channels"],
                    train_mpp=2.0,
                    tile_size=tile,
                    freeze_encoder=frozen,
                )
                common = dict(
                    tables="square_008um", batch_size=args.batch_size, progress=False, device=args.device
                )
                model.train(
                    slide, max_epochs=1, steps_per_epoch=1, n_top_genes=50, **common
                )  # warm-up, builds caches
                t0 = time.perf_counter()
                model.train(slide, max_epochs=1, steps_per_epoch=args.steps, **common)
                dt = (time.perf_counter() - t0) / args.steps
                rows.append((preset, "frozen" if frozen else "fine-tuned", tile, dt, args.batch_size / dt))
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"device {args.device}, torch {torch.__version__}"
    )
    print(f"steps timed: {args.steps} per row, batch {args.batch_size} tiles, 50 genes, 2 µm/px, resnet18\n")
    print("| preset | encoder | tile (px) | s / step | tiles / s |")
    print("|---|---|---|---|---|")
    for p, f, t, dt, tps in rows:
        print(f"| {p} | {f} | {t} | {dt:.3f} | {tps:.1f} |")


if __name__ == "__main__":
    main()
