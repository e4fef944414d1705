"""Wall time of ``tl.train`` with default arguments on the four shared HER2ST sections (CPU).

python benchmarks/her2st_default_train.py [--data-dir ../shared/data/her2st]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

import stpredict as stp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="../shared/data/her2st")
    args = ap.parse_args()
    t0 = time.perf_counter()
    sections = [stp.datasets.her2st(s, data_dir=args.data_dir) for s in stp.datasets.HER2ST_SECTIONS]
    t_load = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = stp.tl.train(sections, tables="spots", progress=False)
    t_train = time.perf_counter() - t1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch threads {torch.get_num_threads()}, device {stp.settings.device}")
    print(
        f"load 4 sections: {t_load:.1f} s; tl.train defaults ({model!r}): {t_train:.1f} s; peak RSS {rss:.0f} MiB"
    )
    print(f"last epoch: {model.history[-1]}")


if __name__ == "__main__":
    main()
