"""Finer than its labels, on real tissue: train on pooled HER2ST spots, score on the single spots (LOSO, CPU).

For each held-out section of C2–C5 and each seed: the other three sections' measured 100 µm spots are pooled
into non-overlapping k × k blocks (``pp.pool_footprints``: summed counts over the union of the member disks, the
phase with the most complete blocks; complete blocks only, or with ``--blocks all`` every block with whatever members
lie under tissue, which is what a coarse spot there would measure), PixNet, the SpotRegressor and the LinearProbe are
trained on those pooled footprints only, and each predicts the held-out section's **single measured spots** and
its **2 × 2 pools**, scored with ``tl.evaluate`` against the measurements. ``--pools 1`` is the control (trained on
the spots themselves).

Everything is fixed before the run (nothing is chosen on a test fold):

- genes: the top ``--genes`` by mean on the training sections' *single* spots (``select_genes``), the same list for
  every pool size and method of a fold; or the genes of ``--genes-file`` (the 785-gene published protocol);
- PixNet: the recipe chosen on the inner split C2 + C3 → C4 (``her2st_ablation.py``): 4 µm/px, 8 tiles per step,
  EMA 0.99, 500 steps; the tile is 128 px or, for footprints larger than that holds, the smallest multiple of 32 px
  ≥ 1.25 × the largest training footprint (a tile holds a whole footprint with room to move);
  ``--map-space rate`` (default: the Poisson likelihood on the summed raw counts, exact for unions) or ``log``;
- SpotRegressor: the ``cpu`` preset (2 µm/px, 32 crops per step), EMA 0.99, 500 steps; crops of 1.5 × each
  footprint's bounding box resampled to 75 px (its spot-level input), for training and prediction alike — the
  spot-level context rule, as in ``cross_scale.py``;
- LinearProbe: 4 µm/px, 128 px feature tiles (grown to hold the largest footprint), ridge with alpha by
  leave-one-training-section-out cross-validation;
- same random-init ResNet18 for all (``--encoder-weights`` for a local file).

Equal wall-clock: after its 500 steps, the SpotRegressor is trained on, one epoch of 50 steps at a time, while that
brings its training time closer to PixNet's (read from the results file, so a resumed run pairs with the same
PixNet run); rows with budget "equal time". The probe is one closed-form fit (no budget to equalise).

Resumable: every (seed, fold, pool, method) writes its rows to ``--out`` (CSV, appended as it goes); units already
there are skipped. ``--report`` writes the markdown summary from the CSV without training::

    python benchmarks/her2st_cross_scale.py --data-dir ../shared/data/her2st --seeds 0,1 --pools 3,1,2
    python benchmarks/her2st_cross_scale.py --report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd

METRICS = ["PCC@F", "PCC@S", "PCC@M", "MSE", "MAE", "SSIM", "ARI_pred_vs_truth"]
METHODS = ["PixNet", "SpotRegressor", "LinearProbe"]


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def pooled_table(sd, k: int, blocks: str = "complete") -> str:
    """The training table of a section for pool size ``k`` (``"spots"`` for 1), written once per section.

    ``blocks="complete"``: only blocks whose k² spots were all measured; ``"all"``: every block with whatever
    members lie under tissue (what a coarse spot there would measure: the rest of it covers glass).
    """
    import stpredict as stp

    if k == 1:
        return "spots"
    name = f"spots_pooled{k}" + ("" if blocks == "complete" else "_all")
    if name not in sd.tables:
        stp.pp.pool_footprints(sd, "spots", size=k, key_added=name, complete=blocks == "complete")
    return name


def largest_footprint_um(sds: list, table: str) -> float:
    """The largest bounding-box side (µm) of the footprints a table links to, over sections."""
    from stpredict._core import get_mpp, table_footprints
    from stpredict._core._footprints import footprint_diameters

    out = 0.0
    for sd in sds:
        key = next(iter(sd.images))
        fp, _ = table_footprints(sd, table, key)
        out = max(out, float(footprint_diameters(fp).max()) * get_mpp(sd, key))
    return out


def recipe(method: str, args, largest_um: float) -> dict:
    enc = {"encoder": args.encoder, "encoder_weights": args.encoder_weights}
    steps = {"max_epochs": args.epochs, "steps_per_epoch": args.steps, "ema": 0.99}
    if method == "PixNet":
        mpp = 4.0
        tile = max(128, int(np.ceil(1.25 * largest_um / mpp / 32) * 32))
        return {
            "model": "pixnet",
            **enc,
            **steps,
            "train_mpp": mpp,
            "tile_size": tile,
            "batch_size": 8,
            "map_space": args.map_space,
            **json.loads(args.pixnet_args),
        }
    if method == "SpotRegressor":
        return {"model": "spot_regressor", **enc, **steps, "input_size": 75}
    return {"model": "linear_probe", **enc, "train_mpp": 4.0, "tile_size": 128}


def score(sd, model, test: str, shapes: str, truth: str, seed: int) -> tuple[dict, float]:
    import stpredict as stp

    key = f"xs_{model.key}"
    t0 = time.perf_counter()
    stp.tl.predict_shapes(sd, model, shapes=shapes, key_added=key, overwrite=True)
    t_pred = time.perf_counter() - t0
    _, summary = stp.tl.evaluate(sd, pred=f"{key}_{shapes}", truth=truth, seed=seed)
    s = summary.loc[test]
    return {**{m: float(s.get(m, np.nan)) for m in METRICS}, "n_scored": int(s["n_footprints"])}, t_pred


def run_unit(
    sections: dict, test: str, pool: int, method: str, seed: int, args, done: pd.DataFrame
) -> list[dict]:
    import stpredict as stp
    from stpredict._core._recipe import select_genes

    train_names = [s for s in sections if s != test]
    train = [sections[s] for s in train_names]
    if args.genes_file:
        genes = [g.strip() for g in Path(args.genes_file).read_text().split() if g.strip()]
    else:
        genes = select_genes([sd.tables["spots"] for sd in train], args.genes)
    table = pooled_table(train[0], pool, args.blocks)
    for sd in train[1:]:
        pooled_table(sd, pool, args.blocks)
    n_train = sum(sd.tables[table].n_obs for sd in train)
    largest = largest_footprint_um(train, table)
    kw = recipe(method, args, largest)
    sd = sections[test]
    test_pool2 = pooled_table(sd, 2)
    rows = []

    def report(model, budget: str, t_train: float, steps: int | None) -> None:
        for evaluated, shapes, truth in (
            ("single spots", f"{test}_spots", "spots"),
            ("2x2 pools", f"{test_pool2}_shapes", test_pool2),
        ):
            m, t_pred = score(sd, model, test, shapes, truth, seed)
            rows.append(
                {
                    "seed": seed,
                    "test": test,
                    "pool": pool,
                    "blocks": args.blocks if pool > 1 else "",
                    "tag": args.tag,
                    "method": method,
                    "map_space": kw.get("map_space", ""),
                    "budget": budget,
                    "scored_on": evaluated,
                    **m,
                    "train_s": t_train,
                    "predict_s": t_pred,
                    "steps": steps,
                    "n_train_footprints": n_train,
                    "largest_train_um": largest,
                    "n_genes": len(model.genes),
                    "genes": "file" if args.genes_file else f"top{args.genes}",
                    "recipe": json.dumps({k: v for k, v in kw.items() if k != "encoder_weights"}),
                    "commit": args.commit,
                    "machine": args.machine,
                }
            )
            print(
                f"[seed {seed} {test} pool {pool}] {method} ({budget}) on {evaluated}: PCC@M {m['PCC@M']:.3f}, "
                f"MSE {m['MSE']:.3f}, train {t_train:.0f} s, predict {t_pred:.1f} s",
                flush=True,
            )

    t0 = time.perf_counter()
    model = stp.tl.train(train, tables=table, preset="cpu", genes=genes, seed=seed, progress=False, **kw)
    t_train = time.perf_counter() - t0
    steps = args.epochs * args.steps if "max_epochs" in kw else None
    report(model, "equal steps" if steps else "one fit", t_train, steps)
    if method == "SpotRegressor" and args.equal_time and len(done):
        ref = done[
            (done.seed == seed)
            & (done.test == test)
            & (done["pool"] == pool)
            & (done.blocks.fillna("") == (args.blocks if pool > 1 else ""))
            & (done.tag.fillna("") == args.tag)
            & (done.method == "PixNet")
            & (done.budget == "equal steps")
            & (done.map_space == args.map_space)
        ]
        if len(ref):
            t_pix = float(ref.train_s.iloc[0])
            t, extra, per_epoch = t_train, 0, t_train / args.epochs
            while t + per_epoch / 2 < t_pix:
                t1 = time.perf_counter()
                model.train(
                    train,
                    tables=table,
                    max_epochs=1,
                    steps_per_epoch=args.steps,
                    seed=seed + 1 + extra,
                    ema=0.99,
                    progress=False,
                )
                t += time.perf_counter() - t1
                extra += 1
            report(model, "equal time", t, (args.epochs + extra) * args.steps)
    return rows


def read_results(out: Path) -> pd.DataFrame:
    """The rows written so far (rows from before ``--blocks`` existed pooled complete blocks)."""
    if not out.exists():
        return pd.DataFrame()
    df = pd.read_csv(out, keep_default_na=False, na_values=[""])
    if "blocks" not in df:
        df.insert(df.columns.get_loc("pool") + 1, "blocks", np.where(df["pool"] > 1, "complete", ""))
    if "tag" not in df:
        df.insert(df.columns.get_loc("blocks") + 1, "tag", "")
    return df


def published_table(df: pd.DataFrame, data_dir: str | Path) -> str:
    """The 785-gene rows per section beside Reg2ST's own per-section results (31 training sections of 8 patients)."""
    pub_file = Path(data_dir) / "published_reg2st_per_section.tsv"
    rows = df[(df.genes == "file") & (df.scored_on == "single spots")]
    if not len(rows) or not pub_file.is_file():
        return ""
    pub = pd.read_csv(pub_file, sep="\t").set_index("section")["Reg2ST_mean_PCC_785"]
    secs = [s for s in pub.index if s in set(rows.test)]
    lines = [
        "| trained on | method | budget | " + " | ".join(secs) + " | mean |",
        "|---|---|---|" + "---|" * (len(secs) + 1),
    ]
    for (pool, blocks, tag, method, budget), g in rows.groupby(["pool", "blocks", "tag", "method", "budget"]):
        v = g.groupby("test")["PCC@M"].mean()
        cells = [f"{v[s]:.3f}" if s in v else "" for s in secs]
        mean = f"{v.reindex(secs).mean():.3f}" if v.reindex(secs).notna().all() else ""
        what = f"{pool}×{pool}{' ' + blocks if blocks else ''}{' ' + tag if tag else ''}"
        lines.append(f"| {what} | {method} | {budget} | " + " | ".join(cells) + f" | {mean} |")
    lines.append(
        "| 1×1, 31 sections of 8 patients | Reg2ST (published) | | "
        + " | ".join(f"{pub[s]:.3f}" for s in secs)
        + f" | {pub[secs].mean():.3f} |"
    )
    return (
        "\n\n785-gene published protocol (PCC@M on the held-out section's single spots):\n\n"
        + "\n".join(lines)
        + "\n"
    )


def summarise(df: pd.DataFrame) -> str:
    """Mean over folds per (seed, pool, method, budget, scored_on), then over seeds; ratios of the issue's bar."""
    df = df.assign(**{c: df[c].astype(object).fillna("") for c in ("blocks", "map_space", "tag")})
    keys = ["pool", "blocks", "tag", "method", "map_space", "budget", "scored_on"]
    per_seed = (
        df.groupby(["seed", *keys], dropna=False)[["PCC@M", "PCC@S", "MSE", "train_s"]].mean().reset_index()
    )
    n_folds = df.groupby(["seed", *keys], dropna=False)["test"].nunique().reset_index(name="folds")
    per_seed = per_seed.merge(n_folds, on=["seed", *keys])
    lines = [
        "| pool (trained on) | blocks | arm | method | map | budget | scored on | seeds | folds per seed | PCC@M (per seed) | "
        "PCC@M mean | PCC@S | MSE | train (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k, g in per_seed.groupby(keys, dropna=False, sort=True):
        pool, blocks, tag, method, ms, budget, on = k
        lines.append(
            f"| {pool}×{pool} | {blocks} | {tag} | {method} | {ms} | {budget} | {on} | {g.seed.nunique()} | "
            f"{'/'.join(str(int(x)) for x in g.folds)} | {' / '.join(f'{v:.3f}' for v in g['PCC@M'])} | "
            f"**{g['PCC@M'].mean():.3f}** | {g['PCC@S'].mean():.3f} | {g['MSE'].mean():.3f} | {g.train_s.mean():.0f} |"
        )
    fold_lines = [
        "| seed | test | pool | blocks | arm | method | map | budget | PCC@M single spots | PCC@M 2x2 pools | train (s) |"
    ]
    fold_lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for k, g in df.groupby(
        ["seed", "test", "pool", "blocks", "tag", "method", "map_space", "budget"], sort=True
    ):
        by = g.set_index("scored_on")
        cell = {
            on: f"{by.loc[on, 'PCC@M']:.3f}" if on in by.index else "" for on in ("single spots", "2x2 pools")
        }
        fold_lines.append(
            f"| {k[0]} | {k[1]} | {k[2]}×{k[2]} | {k[3]} | {k[4]} | {k[5]} | {k[6]} | {k[7]} | "
            f"{cell['single spots']} | {cell['2x2 pools']} | {g.train_s.iloc[0]:.0f} |"
        )
    return "\n".join(lines) + "\n\nPer fold:\n\n" + "\n".join(fold_lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/her2st")
    ap.add_argument("--sections", default="C2,C3,C4,C5")
    ap.add_argument("--folds", default=None, help="held-out sections (default: every section)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--pools", default="3,1,2", help="pool sizes to train on, in the order to run them")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--map-space", choices=["rate", "log"], default="rate", help="PixNet's map (and loss)")
    ap.add_argument("--pixnet-args", default="{}", help="PixNet arguments on top of the recipe, as JSON")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--encoder-weights", default=None)
    ap.add_argument("--genes", type=int, default=250)
    ap.add_argument(
        "--genes-file", default=None, help="train and score these genes (e.g. hist2st_785_genes.txt)"
    )
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument(
        "--blocks",
        choices=["complete", "all"],
        default="complete",
        help="pool only complete blocks (default) or every block with whatever members were measured",
    )
    ap.add_argument(
        "--tag", default="", help="a name for this arm (e.g. 'frozen'): rows of different arms are kept apart"
    )
    ap.add_argument("--no-equal-time", dest="equal_time", action="store_false")
    ap.add_argument("--downsample", type=int, default=1, help="read images downsampled (quick checks only)")
    ap.add_argument("--out", default="benchmarks/results/her2st_cross_scale.csv")
    ap.add_argument("--report", action="store_true", help="only write the markdown summary of --out")
    args = ap.parse_args()
    out = Path(args.out)
    if args.report:
        md = summarise(read_results(out))
        md += published_table(read_results(out), args.data_dir)
        out.with_suffix(".md").write_text(md)
        print(md)
        return
    import torch

    import stpredict as stp

    args.commit = _commit()
    args.machine = f"{platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    sections_ = [s.strip() for s in args.sections.split(",") if s.strip()]
    folds = sections_ if args.folds is None else [s.strip() for s in args.folds.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not set(methods) <= set(METHODS):
        ap.error(f"--methods must be among {METHODS}")
    sections = {
        s: stp.datasets.her2st(s, data_dir=args.data_dir, downsample=args.downsample) for s in sections_
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    for seed in [int(s) for s in args.seeds.split(",")]:
        for pool in [int(p) for p in args.pools.split(",")]:
            for test in folds:
                for method in methods:
                    done = read_results(out)
                    ms = args.map_space if method == "PixNet" else ""
                    gl = "file" if args.genes_file else f"top{args.genes}"
                    if (
                        len(done)
                        and (
                            (done.seed == seed)
                            & (done.test == test)
                            & (done["pool"] == pool)
                            & (done.blocks.fillna("") == (args.blocks if pool > 1 else ""))
                            & (done.tag.fillna("") == args.tag)
                            & (done.method == method)
                            & (done.map_space.fillna("") == ms)
                            & (done.genes == gl)
                        ).any()
                    ):
                        continue
                    rows = run_unit(sections, test, pool, method, seed, args, done)
                    pd.concat([done, pd.DataFrame(rows)], ignore_index=True).to_csv(out, index=False)
    md = summarise(read_results(out)) + published_table(read_results(out), args.data_dir)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
