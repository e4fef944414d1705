"""Multi-scale supervision on synthetic slides: does training on 2 + 8 + 16 µm bins together help? (CPU)

For each seed: simulate a slide (true expression known everywhere), train PixNet (``cpu`` preset)
on one bin size or on several at once, with the targets and loss of each configuration, then
predict 16/8/2 µm bins and 100 µm spots and compare with the *true* expected expression of the same
footprints (normalised with the model's recipe, as ``benchmarks/cross_scale.py``). Configurations
(``--configs``, comma-separated):

- ``b16``, ``b8``, ``b2``: one bin size, log-normalised targets, MSE + PCC (the paper's loss);
- ``multi_pooled``: 2 + 8 + 16 µm together, one loss pooled over every footprint of a step (before this
  change the only behaviour);
- ``multi_equal``: the same with one loss per bin size, averaged (``table_weighting="equal"``);
- ``multi_rate``: a rate map fitted to the raw counts with a Poisson likelihood (``map_space="rate"``)
  + the PCC term, one loss per bin size;
- ``multi_rate_pooled``: the rate map with the Poisson deviance pooled over all footprints (each bin
  weighs by its counts);
- ``b16_rate``, ``b8_rate``: the rate map on one bin size.

``--visium-hd`` writes each slide as a Space Ranger Visium HD ``outs/`` folder and trains on what
``io.read_visium_hd`` reads back (the synthetic truth is kept for scoring).

Every configuration gets the same number of optimiser steps (``--epochs × --steps``); ``--equal-time``
adds, per seed, each configuration trained on (whole epochs) to the slowest one's training time::

    python benchmarks/multiscale.py --seeds 3,5 --configs b16,b8,multi_pooled,multi_equal,multi_rate

Writes the markdown table to stdout and to ``--out`` (plus a CSV next to it).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
from _results import write_results
from cross_scale import subset  # the same evaluation subsets as the cross-scale benchmark

import stpredict as stp

BINS = ["square_002um", "square_008um", "square_016um"]
CONFIGS = {
    "b16": (["square_016um"], {}),
    "b8": (["square_008um"], {}),
    "b2": (["square_002um"], {}),
    "multi_pooled": (BINS, {"table_weighting": "pooled"}),
    "multi_equal": (BINS, {"table_weighting": "equal"}),
    "multi_rate": (BINS, {"map_space": "rate", "table_weighting": "equal"}),
    "multi_rate_pooled": (BINS, {"map_space": "rate", "table_weighting": "pooled"}),
    "b16_rate": (["square_016um"], {"map_space": "rate"}),
    "b8_rate": (["square_008um"], {"map_space": "rate"}),
}
SCALES = [
    ("square_016um", "16 µm"),
    ("square_008um", "8 µm"),
    ("square_002um", "2 µm"),
    ("st_spots", "100 µm spots"),
]


def visium_hd_like(sd, seed: int):
    """The slide written as a Space Ranger Visium HD ``outs/`` folder and read back with ``io.read_visium_hd``.

    The reader's bin tables hold the same bins in the same order; the synthetic truth (``layers["expected"]``) is
    carried over for scoring only.
    """
    import tempfile

    outs = stp.datasets.write_visium_hd_outs(
        sd, Path(tempfile.mkdtemp(prefix=f"ms_hd{seed}_")) / "outs", tables=BINS
    )
    # every size as shapes (the 2 µm bins too): the evaluation subsets select bins by polygon
    hd = stp.io.read_visium_hd(outs, dataset_id="hd", bins_as="shapes")
    for t in BINS:
        if list(hd.tables[t].obs_names) != list(sd.tables[t].obs_names):
            raise RuntimeError(f"the reader's {t} bins are not the synthetic slide's")
        hd.tables[t].layers["expected"] = sd.tables[t].layers["expected"]
    return hd


def score(
    sd, model, evals: dict, seed: int, config: str, budget: str, t_train: float, steps: int
) -> list[dict]:
    """PCC@M / MSE of the model against the truth at every scale (those the slide has)."""
    rows = []
    for s, label in SCALES:
        if s not in evals:
            continue
        shapes, truth = evals[s]
        (pred,) = stp.tl.predict_shapes(sd, model, shapes=shapes, key_added="ms_pred", overwrite=True)
        _, summary = stp.tl.evaluate(sd, pred=pred, truth=truth, layer="expected", ssim=False, ari=False)
        r = summary.iloc[0]
        rows.append(
            {
                "seed": seed,
                "config": config,
                "budget": budget,
                "steps": steps,
                "scale": label,
                "n": int(r["n_footprints"]),
                "PCC@M": r["PCC@M"],
                "PCC@S": r["PCC@S"],
                "MSE": r["MSE"],
                "train_s": t_train,
            }
        )
    print(
        f"[seed {seed}] {config} ({budget}, {steps} steps, {t_train:.0f} s): "
        + ", ".join(f"{r['scale']} {r['PCC@M']:.3f}" for r in rows),
        flush=True,
    )
    return rows


def run_seed(seed: int, args) -> list[dict]:
    sd = stp.datasets.synthetic(
        seed=seed, n_genes=args.genes, width_um=args.width_um, height_um=args.height_um
    )
    if args.visium_hd:
        sd = visium_hd_like(sd, seed)
    rng = np.random.default_rng(seed)
    evals = {s: subset(sd, s, args.max_footprints, rng) for s, _ in SCALES if s in sd.tables}
    rows, models, times = [], {}, {}
    for config in args.configs:
        tables, extra = CONFIGS[config]
        t0 = time.perf_counter()
        model = stp.tl.train(
            sd,
            tables=tables,
            preset="cpu",
            n_top_genes=args.genes,
            max_epochs=args.epochs,
            steps_per_epoch=args.steps,
            seed=args.train_seed,
            progress=False,
            **extra,
        )
        times[config] = time.perf_counter() - t0
        models[config] = model
        rows += score(sd, model, evals, seed, config, "equal steps", times[config], args.epochs * args.steps)
    if args.equal_time:
        budget = max(times.values())
        for config, model in models.items():
            t, steps = times[config], args.epochs * args.steps
            tables, _ = CONFIGS[config]
            per_epoch = t / args.epochs
            extra_epochs = int((budget - t) / per_epoch + 0.5)
            if extra_epochs < 1:
                continue
            t0 = time.perf_counter()
            stp.tl.train(
                sd,
                tables=tables,
                model=model,
                max_epochs=extra_epochs,
                steps_per_epoch=args.steps,
                progress=False,
            )
            t += time.perf_counter() - t0
            steps += extra_epochs * args.steps
            rows += score(sd, model, evals, seed, config, "equal time", t, steps)
    return rows


def to_markdown(df: pd.DataFrame, args, total_s: float) -> str:
    wide = []
    for (config, budget), g in df.groupby(["config", "budget"], sort=False):
        row = {"configuration": config, "budget": budget, "steps (mean)": f"{g['steps'].mean():.0f}"}
        for _, label in SCALES:
            v = g[g["scale"] == label]["PCC@M"]
            row[f"{label} PCC@M"] = " / ".join(f"{x:.3f}" for x in v) + (
                f" (mean {v.mean():.3f})" if len(v) > 1 else ""
            )
        row["train (s)"] = f"{g['train_s'].mean():.0f}"
        wide.append(row)
    table = pd.DataFrame(wide)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in table.itertuples(index=False)]
    head = (
        (
            "Read through `io.read_visium_hd` from generated Space Ranger `outs/` folders. "
            if args.visium_hd
            else ""
        )
        + f"Synthetic slides ({args.width_um:g} × {args.height_um:g} µm, {args.genes} genes), seeds "
        f"{', '.join(map(str, args.seeds))} (values per seed, then their mean), PixNet `cpu` preset, random-init "
        f"ResNet18, training seed {args.train_seed}, {args.epochs} × {args.steps} steps (equal steps); scored against the "
        f"true expression of {args.max_footprints} random tissue footprints per size; total {total_s / 60:.1f} min.\n\n"
    )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="3,5")
    ap.add_argument("--configs", default="b16,b8,multi_pooled,multi_equal,multi_rate")
    ap.add_argument("--genes", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--width-um", type=float, default=1200.0)
    ap.add_argument("--height-um", type=float, default=1008.0)
    ap.add_argument("--max-footprints", type=int, default=2000, help="footprints evaluated per size")
    ap.add_argument(
        "--equal-time", action="store_true", help="also train each configuration to the slowest one's time"
    )
    ap.add_argument(
        "--visium-hd",
        action="store_true",
        help="train and score on the slide written as a Visium HD outs/ folder and read by io.read_visium_hd",
    )
    ap.add_argument("--out", default="benchmarks/results/multiscale.md")
    args = ap.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.configs = args.configs.split(",")
    unknown = sorted(set(args.configs) - set(CONFIGS))
    if unknown:
        ap.error(f"unknown configuration(s) {unknown}; choose from {sorted(CONFIGS)}")
    t0 = time.perf_counter()
    rows = []
    for seed in args.seeds:
        rows += run_seed(seed, args)
    df = pd.DataFrame(rows)
    md = to_markdown(df, args, time.perf_counter() - t0)
    write_results(df, md, args.out)


if __name__ == "__main__":
    main()
