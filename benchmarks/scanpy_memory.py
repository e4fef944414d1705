"""scanpy's own memory on a table of a capture area's 8 µm bins: PCA, neighbours, Leiden on a plain AnnData.

No stpredict: a random ``--n`` × ``--genes`` float32 AnnData (40 clusters plus noise), then ``sc.pp.pca``,
``sc.pp.neighbors`` and ``sc.tl.leiden`` with scanpy's defaults, peak RSS (``ru_maxrss``) after each. It tells what
of ``capture_area.py``'s scanpy step is scanpy's.

    python benchmarks/scanpy_memory.py                 # 659 344 × 50: a 6.5 mm capture area's 8 µm bins
    python benchmarks/scanpy_memory.py --n 20000       # a quick run
"""

from __future__ import annotations

import argparse
import resource
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=659_344)
    ap.add_argument("--genes", type=int, default=50)
    args = ap.parse_args()

    import anndata as ad
    import numpy as np
    import scanpy as sc

    def rss() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, args.genes)).astype(np.float32)
    X = base[rng.integers(0, 40, args.n)] + 0.3 * rng.normal(size=(args.n, args.genes)).astype(np.float32)
    a = ad.AnnData(X=X)
    print(
        f"| step | seconds | peak RSS (MiB) |\n|---|---|---|\n| {args.n} × {args.genes} AnnData | | {rss():.0f} |"
    )
    for name, fn in (
        ("sc.pp.pca(n_comps=20)", lambda: sc.pp.pca(a, n_comps=min(20, args.genes - 1))),
        ("sc.pp.neighbors", lambda: sc.pp.neighbors(a)),
        (
            "sc.tl.leiden(flavor='igraph', n_iterations=2)",
            lambda: sc.tl.leiden(a, flavor="igraph", n_iterations=2),
        ),
    ):
        t0 = time.perf_counter()
        fn()
        print(f"| {name} | {time.perf_counter() - t0:.0f} | {rss():.0f} |", flush=True)


if __name__ == "__main__":
    main()
