"""Leave-one-section-out benchmark on HER2ST: PixNet vs SpotRegressor vs LinearProbe (CPU, about an hour).

For each of the shared sections C2–C5: train on the other three, predict the held-out section's
spots, compare with its measured spots (``tl.evaluate``). All three models use the same encoder
and initialisation (random-init ResNet18 unless ``--encoder-weights`` names a local file), the
same 250 genes chosen on the training sections only, the same normalisation and loss, and the
same budget of optimiser steps (the recipe is fixed below; nothing is tuned on a test fold)::

    python benchmarks/her2st.py --data-dir ../shared/data/her2st

Writes the markdown table to stdout and to ``--out`` (plus a CSV next to it).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import torch
from _results import write_results

import stpredict as stp

METRICS = ["PCC@F", "PCC@S", "PCC@M", "MSE", "MAE", "SSIM", "ARI_pred_vs_truth"]


def recipe(args) -> dict[str, dict]:
    """The fixed training recipe per method (the `cpu` presets; same steps for the two trained networks).

    With ``--defaults``: nothing but the model's name — ``tl.train(sections, tables="spots", model=...)`` as a user
    calls it, preset ``"auto"`` and every default (genes: its top 250); ``--pixnet-args`` still apply to PixNet.
    """
    if args.defaults:
        return {
            "PixNet": {"model": "pixnet", **json.loads(args.pixnet_args)},
            "SpotRegressor": {"model": "spot_regressor"},
            "LinearProbe": {"model": "linear_probe"},
        }
    enc = {"encoder": args.encoder, "encoder_weights": args.encoder_weights}
    if args.train_mpp is not None:  # default: the presets' 2 µm/px
        enc["train_mpp"] = args.train_mpp
    steps = {"max_epochs": args.epochs, "steps_per_epoch": args.steps, **json.loads(args.train_args)}
    return {
        # the cpu preset: 4 tiles of 192 px (384 µm) at 2 µm/px per step (--pixnet-args on top)
        "PixNet": {"model": "pixnet", **enc, **steps, **json.loads(args.pixnet_args)},
        "SpotRegressor": {
            "model": "spot_regressor",
            **enc,
            **steps,
        },  # 32 crops of 150 µm at 2 µm/px per step
        "LinearProbe": {"model": "linear_probe", **enc},  # one pass of feature extraction + ridge (CV alpha)
    }


def ssl_weights(sections: dict, test: str, args, train_mpp: float) -> str | None:
    """Per fold and pixel size, an encoder pretrained (SimSiam) on the images of the training sections only.

    The test section's image is not used (``--ssl transductive`` adds it: reported apart). Each model gets
    the encoder pretrained at the pixel size it trains at. Weights are cached in ``--ssl-dir`` by fold and
    settings (``tl.pretrain_encoder`` returns a finished file as is).
    """
    if args.ssl == "none":
        return args.encoder_weights
    names = [s for s in sections if s != test or args.ssl == "transductive"]
    out = (
        Path(args.ssl_dir)
        / f"{args.encoder}_{args.ssl}_{test}_{train_mpp:g}um_{args.ssl_tile_size}px_{args.ssl_tiles}_{args.ssl_epochs}x{args.ssl_steps}.pth"
    )
    t0 = time.perf_counter()
    stp.tl.pretrain_encoder(
        [sections[s] for s in names],
        out,
        encoder=args.encoder,
        encoder_weights=args.encoder_weights,
        train_mpp=train_mpp,
        tile_size=args.ssl_tile_size,
        n_tiles=args.ssl_tiles,
        max_epochs=args.ssl_epochs,
        steps_per_epoch=args.ssl_steps,
        seed=args.seed,
        progress=False,
    )
    print(
        f"[{test}] SSL encoder on {names} at {train_mpp:g} µm/px: {out} ({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    return str(out)


def score(sd, model, test: str, args) -> tuple[dict, float]:
    """Predict the test section's spots and score them against the measured ones."""
    key = f"bench_{model.key}"
    t1 = time.perf_counter()
    stp.tl.predict_shapes(sd, model, shapes=f"{test}_spots", key_added=key, overwrite=True)
    t_pred = time.perf_counter() - t1
    _, summary = stp.tl.evaluate(sd, pred=f"{key}_{test}_spots", truth="spots", seed=args.seed)
    s = summary.loc[test]  # the section is named by its dataset_id
    return {**{m: float(s.get(m, np.nan)) for m in METRICS}, "n_spots": int(s["n_footprints"])}, t_pred


def run_fold(sections: dict, test: str, args) -> list[dict]:
    """Equal steps for every trained network; with ``--equal-time`` the faster network then trains on.

    Equal wall-clock: the network whose equal-step training was faster keeps training, one epoch of
    ``--steps`` steps per call (``train`` resumes where it stopped), while that brings its total training
    time closer to the slower one's; it is scored again and reported with budget "equal time".
    """
    train = [sections[s] for s in sections if s != test]
    sd = sections[test]
    rows, nets = [], {}

    def report(method: str, model, budget: str, t_train: float, steps: int | None) -> None:
        metrics, t_pred = score(sd, model, test, args)
        rows.append(
            {
                "test": test,
                "method": method,
                "budget": budget,
                **metrics,
                "train_s": t_train,
                "predict_s": t_pred,
                "steps": steps,
                "n_genes": len(model.genes),
            }
        )
        print(
            f"[{test}] {method} ({budget}): PCC@M {rows[-1]['PCC@M']:.3f}, MSE {rows[-1]['MSE']:.3f}, "
            f"train {t_train:.0f} s, predict {t_pred:.1f} s",
            flush=True,
        )

    for method, kw in recipe(args).items():
        if method not in args.methods:
            continue
        # every preset trains at 2 µm/px unless --train-mpp or PixNet's arguments say otherwise
        if args.defaults:
            t0 = time.perf_counter()
            model = stp.tl.train(train, tables="spots", seed=args.seed, progress=False, **kw)
        else:
            kw = {**kw, "encoder_weights": ssl_weights(sections, test, args, float(kw.get("train_mpp", 2.0)))}
            t0 = time.perf_counter()
            model = stp.tl.train(
                train,
                tables="spots",
                preset="cpu",
                n_top_genes=args.genes,
                seed=args.seed,
                progress=False,
                **kw,
            )
        t_train = time.perf_counter() - t0
        tp = model.training_params
        steps = (
            int(tp["max_epochs"]) * int(tp["steps_per_epoch"])
            if "max_epochs" in kw or (args.defaults and "steps_per_epoch" in tp)
            else None
        )
        report(method, model, "equal steps", t_train, steps)
        if steps is not None:
            nets[method] = (model, t_train, kw, steps)
    if args.equal_time and len(nets) > 1:
        slow = max(nets, key=lambda m: nets[m][1])
        t_slow = nets[slow][1]
        for method, (model, t, kw, _) in nets.items():
            if method == slow:
                report(method, model, "equal time", t, nets[method][3])
                continue
            epochs, per_step = model.training_params["max_epochs"], model.training_params["steps_per_epoch"]
            per_epoch, extra = t / epochs, 0
            while t + per_epoch / 2 < t_slow:
                t0 = time.perf_counter()
                model.train(
                    train,
                    tables="spots",
                    max_epochs=1,
                    steps_per_epoch=per_step,
                    seed=args.seed + 1 + extra,
                    ema=kw.get("ema"),  # the batch size carries over by itself
                    progress=False,
                )
                t += time.perf_counter() - t0
                extra += 1
            report(method, model, "equal time", t, (epochs + extra) * per_step)
    return rows


def to_markdown(df: pd.DataFrame, args, total_s: float) -> str:
    cols = ["test", "method", "budget", *METRICS, "train_s", "predict_s"]
    fmt = df[cols].copy()
    fmt = fmt.rename(columns={"ARI_pred_vs_truth": "ARI", "train_s": "train (s)", "predict_s": "predict (s)"})
    mean = (
        df.groupby(["budget", "method"], sort=False)[[*METRICS, "train_s", "predict_s"]].mean().reset_index()
    )
    mean.insert(0, "test", "mean")
    mean = mean[["test", "method", "budget", *METRICS, "train_s", "predict_s"]]
    mean = mean.rename(
        columns={"ARI_pred_vs_truth": "ARI", "train_s": "train (s)", "predict_s": "predict (s)"}
    )
    table = pd.concat([fmt, mean], ignore_index=True)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for _, r in table.iterrows():
        cells = [
            str(v)
            if isinstance(v, str)
            else (f"{v:.0f}" if c in ("train (s)", "predict (s)") else f"{v:.3f}")
            for c, v in r.items()
        ]
        lines.append("| " + " | ".join(cells) + " |")
    weights = (
        f"SimSiam per fold and pixel size ({args.ssl}: {'training sections' if args.ssl == 'train' else 'all four'} images, "
        f"{args.ssl_tiles} tiles of {args.ssl_tile_size} px, {args.ssl_epochs} × {args.ssl_steps} steps, "
        f"from {args.encoder_weights or 'random init'})"
        if args.ssl != "none"
        else args.encoder_weights or "none (random init, same seed for every method)"
    )
    head = (
        f"HER2ST leave-one-section-out, sections {', '.join(args.sections)} (held out: {', '.join(args.folds)}); "
        f"encoder {args.encoder}, "
        f"pretrained weights: {weights}; {args.train_mpp or 2:g} µm/px (unless PixNet's arguments say otherwise); {args.genes} genes chosen on the training sections; "
        f"PixNet{' ' + args.pixnet_args if args.pixnet_args != '{}' else ''} and SpotRegressor "
        f"{args.epochs} × {args.steps} steps{' with ' + args.train_args if args.train_args != '{}' else ''}"
        f"{' (equal steps), then the faster trained on to the slower one’s time (equal time)' if args.equal_time else ''}; "
        f"seed {args.seed}; "
        f"torch threads {torch.get_num_threads()}; total {total_s / 60:.1f} min.\n\n"
    )
    if args.defaults:
        head = (
            f"HER2ST leave-one-section-out, sections {', '.join(args.sections)} (held out: {', '.join(args.folds)}); "
            "every model trained with `tl.train(sections, tables='spots', model=...)` and nothing else (preset 'auto', "
            f"all defaults{'; PixNet with ' + args.pixnet_args if args.pixnet_args != '{}' else ''})"
            f"{'; then the faster trained on to the slower one’s time (equal time)' if args.equal_time else ''}; "
            f"seed {args.seed}; torch threads {torch.get_num_threads()}; total {total_s / 60:.1f} min.\n\n"
        )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/her2st", help="folder with the HER2ST sections")
    ap.add_argument("--sections", default=",".join(stp.datasets.HER2ST_SECTIONS))
    ap.add_argument(
        "--folds", default=None, help="held-out sections to run (default: every section, leave-one-out)"
    )
    ap.add_argument("--encoder", default="resnet18", help="timm encoder name (same for all methods)")
    ap.add_argument("--encoder-weights", default=None, help="local pretrained encoder weights file")
    ap.add_argument(
        "--ssl",
        choices=["none", "train", "transductive"],
        default="none",
        help="self-supervised encoder per fold: on the training sections' images, or also on the test image",
    )
    ap.add_argument("--ssl-epochs", type=int, default=20, help="tl.pretrain_encoder max_epochs")
    ap.add_argument("--ssl-steps", type=int, default=50, help="tl.pretrain_encoder steps_per_epoch")
    ap.add_argument("--ssl-tiles", type=int, default=4096, help="tl.pretrain_encoder n_tiles")
    ap.add_argument("--ssl-tile-size", type=int, default=64, help="tl.pretrain_encoder tile_size (px)")
    ap.add_argument("--ssl-dir", default="benchmarks/results/ssl", help="where the per-fold SSL weights go")
    ap.add_argument("--genes", type=int, default=250)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--pixnet-args",
        default="{}",
        help='PixNet tl.train arguments on top of the cpu preset, as JSON (e.g. \'{"train_mpp": 4, "tile_size": 128}\')',
    )
    ap.add_argument(
        "--train-args",
        default="{}",
        help="tl.train arguments for both trained networks (PixNet, SpotRegressor), as JSON (e.g. '{\"ema\": 0.99}')",
    )
    ap.add_argument(
        "--equal-time",
        action="store_true",
        help="also report the faster network trained on (whole epochs) to the slower one's training time",
    )
    ap.add_argument(
        "--methods",
        default="PixNet,SpotRegressor,LinearProbe",
        help="which methods to run (comma-separated; e.g. PixNet,SpotRegressor for extra seeds)",
    )
    ap.add_argument(
        "--defaults",
        action="store_true",
        help="tl.train(sections, tables='spots', model=...) with nothing else: preset 'auto', every default",
    )
    ap.add_argument("--train-mpp", type=float, default=None, help="µm/px the models see (default: preset, 2)")
    ap.add_argument("--downsample", type=int, default=1, help="read images downsampled (quick checks only)")
    ap.add_argument("--out", default="benchmarks/results/her2st.md")
    args = ap.parse_args()
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if len(args.sections) < 2:
        ap.error("Leave-one-out needs at least two sections.")
    args.folds = (
        args.sections if args.folds is None else [s.strip() for s in args.folds.split(",") if s.strip()]
    )
    if not set(args.folds) <= set(args.sections):
        ap.error(f"--folds {args.folds} must be among --sections {args.sections}.")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    known = ["PixNet", "SpotRegressor", "LinearProbe"]
    if not args.methods or not set(args.methods) <= set(known):
        ap.error(f"--methods {args.methods} must be a non-empty subset of {known}.")
    t0 = time.perf_counter()
    sections = {
        s: stp.datasets.her2st(s, data_dir=args.data_dir, downsample=args.downsample) for s in args.sections
    }
    rows = []
    for test in args.folds:
        rows += run_fold(sections, test, args)
    df = pd.DataFrame(rows)
    md = to_markdown(df, args, time.perf_counter() - t0)
    write_results(df, md, args.out)


if __name__ == "__main__":
    main()
