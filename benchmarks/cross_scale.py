"""Cross-scale benchmark on the synthetic slide (the analogue of PixNet's Table 2), CPU.

For each seed: simulate a slide (true expression known everywhere), train PixNet and the
spot-level SpotRegressor on legacy-ST 100 µm spots only, then predict Visium 55 µm spots and
Visium HD 16/8/2 µm bins and compare with the *true* expected expression of the same footprints
(normalised with the model's recipe). PixNet aggregates its dense map over each footprint; the
SpotRegressor crops 1.5× each footprint and resamples the crop to its input size, as spot-level
methods do. Bins are a random subset of tissue bins per size (the same for both methods)::

    python benchmarks/cross_scale.py

Writes the markdown table to stdout and to ``--out`` (plus a CSV next to it).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
from _results import write_results

import stpredict as stp

SCALES = [
    ("st_spots", "100 µm spots (training footprints)"),
    ("visium_spots", "55 µm spots"),
    ("square_016um", "16 µm bins"),
    ("square_008um", "8 µm bins"),
    ("square_002um", "2 µm bins"),
]


def subset(sdata, table: str, n: int, rng: np.random.Generator) -> str:
    """Shapes + table names with up to ``n`` random tissue footprints of ``table`` (same instance ids)."""
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import get_transformation

    t = sdata.tables[table]
    attrs = t.uns["spatialdata_attrs"]
    region, ikey, rkey = attrs["region"], attrs["instance_key"], attrs["region_key"]
    total = np.asarray(t.layers["expected"].sum(1)).ravel()
    rows = np.nonzero(total > 0)[0]
    if rows.size > n:
        rows = np.sort(rng.choice(rows, n, replace=False))
    name, shapes_name = f"eval_{table}", f"eval_{table}_shapes"
    shp = sdata.shapes[region].loc[t.obs[ikey].to_numpy()[rows]].copy()
    ts = get_transformation(sdata.shapes[region], get_all=True)
    shp.attrs.pop("transform", None)
    sdata.shapes[shapes_name] = ShapesModel.parse(shp, transformations=ts)
    sub = t[rows].copy()
    sub.obs[rkey] = pd.Categorical([shapes_name] * len(rows))
    del sub.uns["spatialdata_attrs"]
    sdata.tables[name] = TableModel.parse(sub, region=shapes_name, region_key=rkey, instance_key=ikey)
    return shapes_name, name


def run_seed(seed: int, args) -> list[dict]:
    sd = stp.datasets.synthetic(
        seed=seed, n_genes=args.genes, width_um=args.width_um, height_um=args.height_um
    )
    rng = np.random.default_rng(seed)
    evals = {s: subset(sd, s, args.max_footprints, rng) for s, _ in SCALES}
    fit = {"max_epochs": args.epochs, "steps_per_epoch": args.steps, "seed": seed, "progress": False}
    rows = []
    extra = {"PixNet": json.loads(args.pixnet_args), "SpotRegressor": {}}
    for method, name in (("PixNet", "pixnet"), ("SpotRegressor", "spot_regressor")):
        if method not in args.methods:
            continue
        t0 = time.perf_counter()
        model = stp.tl.train(
            sd,
            tables="st_spots",
            model=name,
            preset="cpu",
            n_top_genes=args.genes,
            encoder=args.encoder,
            **fit,
            **extra[method],
        )
        t_train = time.perf_counter() - t0
        for s, label in SCALES:
            shapes, truth = evals[s]
            t1 = time.perf_counter()
            (pred,) = stp.tl.predict_shapes(sd, model, shapes=shapes, key_added=f"xs_{name}", overwrite=True)
            t_pred = time.perf_counter() - t1
            _, summary = stp.tl.evaluate(sd, pred=pred, truth=truth, layer="expected", ssim=False, ari=False)
            r = summary.iloc[0]  # one section
            rows.append(
                {
                    "seed": seed,
                    "method": method,
                    "scale": label,
                    "n": int(r["n_footprints"]),
                    "PCC@F": r["PCC@F"],
                    "PCC@S": r["PCC@S"],
                    "PCC@M": r["PCC@M"],
                    "MSE": r["MSE"],
                    "train_s": t_train,
                    "predict_s": t_pred,
                }
            )
            print(f"[seed {seed}] {method} {label}: PCC@M {r['PCC@M']:.3f}, MSE {r['MSE']:.3f}", flush=True)
    return rows


def to_markdown(df: pd.DataFrame, args, total_s: float) -> str:
    order = [label for _, label in SCALES]
    g = df.groupby(["scale", "method"], sort=False)
    agg = g[["PCC@F", "PCC@S", "PCC@M", "MSE"]].agg(["mean", "std"])
    n = g["n"].first()
    wide = []
    for scale in order:
        row = {"footprints (vs truth)": scale, "n (first seed)": int(n.loc[scale].iloc[0])}
        for method in args.methods:
            for m in ("PCC@S", "PCC@M", "MSE"):
                mu, sd = agg.loc[(scale, method), (m, "mean")], agg.loc[(scale, method), (m, "std")]
                row[f"{method} {m}"] = f"{mu:.3f} ± {sd:.3f}"
        wide.append(row)
    table = pd.DataFrame(wide)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in table.itertuples(index=False)]
    times = df.groupby("method", sort=False)[["train_s"]].mean()
    mean_times = ", ".join(f"{m} {times.loc[m, 'train_s']:.0f} s" for m in args.methods)
    pixnet = f" (PixNet {args.pixnet_args})" if args.pixnet_args != "{}" else ""
    head = (
        f"Synthetic slides ({args.width_um:g} × {args.height_um:g} µm, {args.genes} genes), seeds {', '.join(map(str, args.seeds))} "
        f"(mean ± SD over seeds); trained on 100 µm ST spots only, encoder {args.encoder} (random init), "
        f"{args.epochs} × {args.steps} steps each{pixnet}; bins: random {args.max_footprints} tissue bins per size. "
        f"Mean training time: {mean_times}; total {total_s / 60:.1f} min.\n\n"
    )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--genes", type=int, default=50)
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--width-um", type=float, default=1200.0)
    ap.add_argument("--height-um", type=float, default=1008.0)
    ap.add_argument("--max-footprints", type=int, default=2000, help="bins evaluated per size")
    ap.add_argument(
        "--pixnet-args",
        default="{}",
        help='PixNet tl.train arguments on top of the cpu preset, as JSON (e.g. \'{"upsample": "resize"}\')',
    )
    ap.add_argument(
        "--methods", default="PixNet,SpotRegressor", help="which methods to run (comma-separated)"
    )
    ap.add_argument("--out", default="benchmarks/results/cross_scale.md")
    args = ap.parse_args()
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    rows = []
    for seed in args.seeds:
        rows += run_seed(seed, args)
    df = pd.DataFrame(rows)
    md = to_markdown(df, args, time.perf_counter() - t0)
    write_results(df, md, args.out)


if __name__ == "__main__":
    main()
