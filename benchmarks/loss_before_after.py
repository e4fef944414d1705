"""A short training run's losses (train and validation) for each loss path, to compare two commits.

Run it at both commits (the earlier one with ``PYTHONPATH=<its checkout>/src``) and compare the JSON files; the
comparison of "House II"'s loss objects is in ``benchmarks/results/loss_before_after.md``::

    python benchmarks/loss_before_after.py after.json
"""

from __future__ import annotations

import argparse
import json
import warnings

import torch

import stpredict as stp
from stpredict.model import PixNet, SpotRegressor

FIT = {"max_epochs": 2, "steps_per_epoch": 3, "batch_size": 2, "progress": False, "seed": 0}
SMALL = {"encoder": "resnet18", "decoder_channels": 16, "train_mpp": 2.0, "tile_size": 128}
RUNS = [
    ("log_pooled", {}, "pooled"),
    ("log_equal", {}, "equal"),
    ("rate_pooled", {"map_space": "rate"}, "pooled"),
    ("rate_equal", {"map_space": "rate"}, "equal"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="JSON file of each run's history")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    stp.settings.verbosity = 0
    a = stp.datasets.synthetic(width_um=640, height_um=512, n_genes=6, seed=2, bins_um=(8, 16))
    b = stp.datasets.synthetic(width_um=640, height_um=512, n_genes=6, seed=3, bins_um=(8, 16))
    out = {}
    for name, kw, weighting in RUNS:
        torch.manual_seed(0)
        model = PixNet(**SMALL, **kw).train(
            [a, b],
            tables=["square_016um", "square_008um"],
            validation=1,
            n_top_genes=4,
            table_weighting=weighting,
            **FIT,
        )
        out[name] = model.history
    torch.manual_seed(0)
    spot = SpotRegressor(encoder="resnet18", train_mpp=2.0)
    out["spot"] = spot.train([a, b], tables="st_spots", validation=1, n_top_genes=4, **FIT).history
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, default=float)
    for name, history in out.items():
        print(name, [{k: round(v, 6) for k, v in e.items() if "loss" in k or "pcc" in k} for e in history])


if __name__ == "__main__":
    main()
