"""Where ``tl.predict_dense``'s time goes: wall and CPU seconds of its phases, by timers around its functions.

A synthetic slide (``--size`` px at 0.5 µm/px, as in ``encoder_ratio.py``) in a zarr store, an untrained
default-preset PixNet with 250 genes; ``predict_dense`` runs twice (the second run is reported) with the arguments
given as JSON. Phases nest (``block`` is the network inside ``_predict_block``; ``write_table`` inside ``_write_table``
inside ``commit``), so the rows do not add up.

    python benchmarks/predict_dense_phases.py                              # 4096² px, default arguments
    python benchmarks/predict_dense_phases.py --args '{"map_as": "latent"}'
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

from predict_dense import _slide


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--args", default="{}", help="tl.predict_dense arguments as JSON")
    args = ap.parse_args()

    import spatialdata as sd
    import spatialdata._io.io_table as io_table
    import torch

    import stpredict as stp
    import stpredict._core._store as S
    import stpredict._core._table_write as TW
    import stpredict.model._dense as D
    import stpredict.tl._predict_dense as P
    from stpredict.model import PixNet

    times: dict[str, list[float]] = {}

    def timed(owner, name):
        f = getattr(owner, name)

        @functools.wraps(f)
        def g(*a, **k):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return f(*a, **k)
            finally:
                w, c = times.setdefault(name, [0.0, 0.0])
                times[name] = [w + time.perf_counter() - t0, c + time.process_time() - c0]

        setattr(owner, name, g)

    for n in ("_predict_block", "_fill_levels", "bin_names", "aggregate_table"):
        timed(P, n)
    for n in ("_write_new_store", "_apply", "_finish_root"):
        timed(S, n)
    timed(TW, "_write_table")  # called by _write_new_store, in its own module
    for n in ("commit", "stage", "_reload_images"):
        timed(S.ElementWriter, n)
    timed(D.DenseEngine, "block")
    timed(io_table, "write_table")  # imported by _write_table when called

    stp.settings.verbosity = 1
    torch.manual_seed(0)
    model, _ = PixNet.from_preset("auto", [f"G{i:03d}" for i in range(250)], pretrained=False)
    kw = json.loads(args.args)
    with tempfile.TemporaryDirectory() as wd:
        path = Path(wd) / "slide.zarr"
        _slide(args.size, path)
        sdata = sd.read_zarr(path)
        for _ in range(2):
            times.clear()
            t0, c0 = time.perf_counter(), time.process_time()
            stp.tl.predict_dense(sdata, model, overwrite=True, progress=False, **kw)
            total = (time.perf_counter() - t0, time.process_time() - c0)
    print(f"{args.size}² px, predict_dense({kw}): {total[0]:.2f} s wall, {total[1]:.2f} s CPU (second run)")
    print("| phase | wall (s) | CPU (s) |\n|---|---|---|")
    for name, (w, c) in sorted(times.items(), key=lambda kv: -kv[1][1]):
        print(f"| {name} | {w:.2f} | {c:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
