"""``tl.predict_dense`` against the encoder alone over the same tissue pixels: how far prediction is from its floor.

A synthetic slide (the synthetic H&E tiled to ``--size`` px at 0.5 µm/px, ~60% tissue, written to zarr and read back
lazily) is predicted with an untrained default-preset PixNet (``PixNet.from_preset("auto")``: ``cpu`` on a CPU,
resnet18 + 64-wide decoder at 2 µm/px; ``--genes`` outputs, 250 as ``tl.train``'s default; the weights do not change
the cost). In one process, with the same torch threads, per block size (``--chunks``) and repeat, interleaved:

- **encoder**: ``net.encoder`` (normalise, pad to the stride, the feature pyramid; nothing else) over the tissue
  blocks the map needs, one block at a time at the model's pixel size, *without* context margins: the pixels a user
  needs encoded once. The blocks are read before the clock starts; the median of three passes.
- **map**: the dense map alone, ``engine.to_dask(tissue mask)`` streamed to a zarr store (what ``predict_dense``
  does first).
- **predict_dense**: ``tl.predict_dense`` as a user runs it (default bins, map at 2 µm), into the slide's store.

Ratios are taken within a repeat (the three runs are adjacent) and the median over repeats is reported, so that a
noisy machine moves numerator and denominator together.

    python benchmarks/encoder_ratio.py                              # 8192² px, blocks of 256, 512 and 1024
    python benchmarks/encoder_ratio.py --size 4096 --chunks 512 1024 2048 --genes 50 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _results import commit, write_results
from predict_dense import _slide

# this folder is the first entry of sys.path when a script in it runs: a module here named like a package (e.g.
# benchmarks/distributed.py) must not shadow it for dask
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


_commit = commit


class _Clock:
    """Wall and CPU seconds (user + system, all threads of this process) of a ``with`` block."""

    def __enter__(self) -> _Clock:
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.t0, time.process_time() - self.c0


def _blocks(engine, mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The blocks ``(y0, y1, x0, x1)`` of the map that touch the mask (the ones the engine runs)."""
    _, Hd, Wd = engine.shape
    c = engine.chunk_size
    out = []
    for y0 in range(0, Hd, c):
        for x0 in range(0, Wd, c):
            y1, x1 = min(Hd, y0 + c), min(Wd, x0 + c)
            if mask[y0:y1, x0:x1].any():
                out.append((y0, y1, x0, x1))
    return out


def _window_px(engine, blocks: list[tuple[int, int, int, int]]) -> int:
    """Map pixels the engine's windows (blocks plus margins, clipped to the map) cover."""
    _, Hd, Wd = engine.shape
    m = engine.margin
    return sum(
        (min(Hd, y1 + m) - max(0, y0 - m)) * (min(Wd, x1 + m) - max(0, x0 - m)) for y0, y1, x0, x1 in blocks
    )


def time_encoder(engine, blocks: list[tuple[int, int, int, int]]) -> _Clock:
    """Seconds of ``net.encoder`` over the blocks at the model's pixel size, without margins (reads not timed)."""
    import torch

    f, down, up = engine.f_out, engine.down, engine.up
    tiles = []
    for y0, y1, x0, x1 in blocks:
        h_in, w_in = math.ceil((y1 - y0) * down / up), math.ceil((x1 - x0) * down / up)
        img = engine.pyramid.read((x0 * f, y0 * f, x1 * f, y1 * f), (h_in, w_in))
        tiles.append(torch.from_numpy(img).permute(2, 0, 1)[None].contiguous())
    enc = engine.module.encoder.eval()
    with _Clock() as clock, torch.no_grad():
        for x in tiles:
            enc.pyramid(x)
    return clock


def time_forward(engine, blocks: list[tuple[int, int, int, int]]) -> _Clock:
    """Seconds of the model's own forward pass over the tissue blocks: the network as ``predict_dense`` runs it
    (each block with its context margin; encoder, decoder, head and the final resize), nothing kept or written."""
    import dask

    with _Clock() as clock, engine.running("cpu"):
        dask.compute(*[dask.delayed(_discard)(engine, *b) for b in blocks])
    return clock


def _discard(engine, y0: int, y1: int, x0: int, x1: int) -> None:
    engine.run_block(y0, y1, x0, x1)


def time_map(engine, mask: np.ndarray, store: Path) -> _Clock:
    """Seconds to stream the dense map of the tissue blocks to a zarr store (``predict_dense``'s first step)."""
    import dask
    import dask.array as da

    with (
        _Clock() as clock,
        engine.running("cpu"),
        dask.config.set({"array.slicing.split_large_chunks": False}),
    ):
        da.to_zarr(engine.to_dask(mask), str(store), overwrite=True)
    return clock


def _warm_up(engine, blocks: list[tuple[int, int, int, int]]) -> None:
    """One encoder pass and one block of the map before any clock starts (oneDNN picks its kernels on first use)."""
    time_encoder(engine, blocks[:1])
    with engine.running("cpu"):
        engine.block(*blocks[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=8192, help="slide side in px at 0.5 µm/px")
    ap.add_argument("--chunks", type=int, nargs="+", default=[256, 512, 1024], help="block sides (map px)")
    ap.add_argument("--margin", type=int, default=None, help="context margin (default: predict_dense's)")
    ap.add_argument("--genes", type=int, default=250)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--bins", type=int, nargs="*", default=None, help="bins_um of predict_dense (default: its own)"
    )
    ap.add_argument("--skip-predict", action="store_true", help="time encoder and map only")
    ap.add_argument(
        "--skip-map", action="store_true", help="do not time the map streamed to zarr through engine.to_dask"
    )
    ap.add_argument(
        "--predict-args",
        default="{}",
        help='more tl.predict_dense arguments as JSON, e.g. \'{"dtype": "float16"}\'',
    )
    ap.add_argument(
        "--full-decoder",
        action="store_true",
        help="also time the map with the decoder run over whole windows (as before forward_region)",
    )
    ap.add_argument("--out", default="benchmarks/results/encoder_ratio.md")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()

    import spatialdata as sd
    import torch

    import stpredict as stp
    from stpredict.model import PixNet

    stp.settings.verbosity = 1
    torch.manual_seed(0)
    model, _ = PixNet.from_preset("auto", [f"G{i:03d}" for i in range(args.genes)], pretrained=False)
    machine = (
        f"{platform.machine()} {platform.processor() or ''}".strip()
        + f", {torch.get_num_threads()} torch threads, CPU only, torch {torch.__version__}"
    )
    print(f"machine: {machine}; {_commit()}")
    print(
        f"model: {model!r}, decoder {model.config['decoder_channels']}, {args.genes} genes, "
        f"train_mpp {model.train_mpp} µm"
    )
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as wd:
        path = Path(wd) / "slide.zarr"
        _slide(args.size, path)
        sdata = sd.read_zarr(path)
        engines = {}
        for c in args.chunks:
            kw = {} if args.margin is None else {"margin": args.margin}
            probe = model.engine(sdata, image_key="he", out_mpp=2.0, chunk_size=c, **kw)
            mask = stp.pp.tissue_mask(sdata, "he", probe.shape[1:])
            blocks = _blocks(probe, mask)
            engines[c] = (probe, mask, blocks)
            print(
                f"chunk {probe.chunk_size}, margin {probe.margin}: {len(blocks)} tissue blocks, "
                f"{sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in blocks) / mask.size:.0%} of the map, "
                f"windows / blocks = {_window_px(probe, blocks) / sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in blocks):.2f}"
            )
        _warm_up(*engines[args.chunks[0]][::2])
        for rep in range(args.repeats):
            order = args.chunks if rep % 2 == 0 else args.chunks[::-1]
            for c in order:
                engine, mask, blocks = engines[c]
                # the encoder is the short run, the most exposed to a busy machine: the median of three
                enc = sorted((time_encoder(engine, blocks) for _ in range(3)), key=lambda k: k.wall)[1]
                runs = {"encoder": enc, "forward": time_forward(engine, blocks)}
                if not args.skip_map:
                    runs["map"] = time_map(engine, mask, Path(wd) / "map.zarr")
                if args.full_decoder:  # the module's forward over the whole window, cropped afterwards
                    engine.module.forward_region = None
                    try:
                        runs["map_full_decoder"] = time_map(engine, mask, Path(wd) / "map.zarr")
                    finally:
                        del engine.module.forward_region
                if not args.skip_predict:
                    with _Clock() as runs["predict_dense"]:
                        stp.tl.predict_dense(
                            sdata,
                            model,
                            chunk_size=c,
                            margin=args.margin,
                            overwrite=True,
                            progress=False,
                            **({} if args.bins is None else {"bins_um": args.bins}),
                            **json.loads(args.predict_args),
                        )
                row = {
                    "repeat": rep,
                    "chunk_size": engine.chunk_size,
                    "margin": engine.margin,
                    "tissue_blocks": len(blocks),
                    "window_over_block_px": _window_px(engine, blocks)
                    / sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in blocks),
                }
                for k, clock in runs.items():
                    row[f"{k}_s"], row[f"{k}_cpu_s"] = clock.wall, clock.cpu
                    if k != "encoder":
                        row[f"{k}_ratio"] = clock.wall / runs["encoder"].wall
                        row[f"{k}_cpu_ratio"] = clock.cpu / runs["encoder"].cpu
                    if k not in ("encoder", "forward"):
                        row[f"{k}_fwd_ratio"] = clock.wall / runs["forward"].wall
                        row[f"{k}_fwd_cpu_ratio"] = clock.cpu / runs["forward"].cpu
                rows.append(row)
                print(
                    f"[{rep}] chunk {c}: "
                    + ", ".join(
                        f"{k} {v.wall:.1f} s wall / {v.cpu:.1f} s CPU"
                        + (
                            f" ({v.wall / runs['encoder'].wall:.2f}x / {v.cpu / runs['encoder'].cpu:.2f}x)"
                            if k != "encoder"
                            else ""
                        )
                        for k, v in runs.items()
                    ),
                    flush=True,
                )
    df = pd.DataFrame(rows)
    df["size_px"], df["genes"], df["machine"], df["commit"] = args.size, args.genes, machine, _commit()
    med = df.groupby(["chunk_size", "margin"], sort=True).median(numeric_only=True).reset_index()
    kinds = [k for k in ("map", "map_full_decoder", "predict_dense") if f"{k}_ratio" in med]
    names = {
        "map": "map",
        "map_full_decoder": "map, decoder over whole windows",
        "predict_dense": "predict_dense",
    }
    md = (
        f"Slide {args.size}² px at 0.5 µm/px, map at 2 µm, default-preset PixNet ({args.genes} genes); "
        f"predict_dense arguments {args.predict_args}; median of {args.repeats} interleaved repeats (ratios taken "
        "within a repeat). Wall / CPU seconds (CPU: user + system of all threads of the process); forward = the "
        f"network over the tissue blocks, nothing written. Machine: {machine}; {_commit()}.\n\n"
        "| block (map px) | margin | windows / blocks (px) | encoder (s) | forward (s) | "
        + " | ".join(f"{names[k]} (s)" for k in kinds)
        + " | forward / encoder | "
        + " | ".join(f"{names[k]} / forward" for k in kinds)
        + " |\n|"
        + "---|" * (6 + 2 * len(kinds))
        + "\n"
    )
    for r in med.to_dict("records"):
        md += (
            f"| {r['chunk_size']} | {r['margin']} | {r['window_over_block_px']:.2f} | "
            f"{r['encoder_s']:.1f} / {r['encoder_cpu_s']:.1f} | {r['forward_s']:.1f} / {r['forward_cpu_s']:.1f} | "
            + " | ".join(f"{r[f'{k}_s']:.1f} / {r[f'{k}_cpu_s']:.1f}" for k in kinds)
            + f" | {r['forward_ratio']:.2f} / {r['forward_cpu_ratio']:.2f} | "
            + " | ".join(f"{r[f'{k}_fwd_ratio']:.2f} / {r[f'{k}_fwd_cpu_ratio']:.2f}" for k in kinds)
            + " |\n"
        )
    write_results(df, md, args.out)


if __name__ == "__main__":
    main()
