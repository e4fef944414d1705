"""``stpredict demo``: synthetic slide -> train -> predict -> zarr + model + PNG, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ._constants import DEMO_TIME
from ._logging import quiet_ome_zarr
from .io._summary import summary

if TYPE_CHECKING:
    from spatialdata import SpatialData

__all__ = ["DEMO_TIME", "demo_png", "run_demo"]


def demo_png(sdata: SpatialData, gene: str, path: Path, *, pred: str, truth: str) -> None:
    """One figure: the gene's dense map over the H&E, and true vs predicted 8 µm bins with the PCC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .pl import compare, expression_map

    fig = plt.figure(figsize=(15, 4.8), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1, 2])
    expression_map(sdata, gene, ax=left.subplots(), show=False)
    axes = right.subplots(1, 2, sharex=True, sharey=True)
    compare(sdata, gene, pred=pred, truth=truth, layer="expected", ax=axes, show=False)
    axes[0].set_title(f"true {gene}, 8 µm bins")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(
    out: Path,
    *,
    seed: int = 0,
    width_um: float = 1200.0,
    height_um: float = 1008.0,
    genes: int = 50,
    epochs: int = 4,
    steps: int = 25,
    progress: bool = True,
) -> int:
    """``stpredict demo``: a synthetic slide, PixNet trained on its spots, the dense map and bins, a PNG; into ``out``.

    Prints each step with its time; returns 0. ``out/synthetic.zarr`` is written over (the command line checks it
    first).
    """
    import time

    import spatialdata as sd

    from . import datasets, tl
    from .model import PixNet

    t_start = time.perf_counter()  # after the imports (torch, spatialdata: ~10 s cold)
    t_phase: float | None = None

    def step(msg: str | None) -> None:
        """Print how long the previous step took, then the next step's title."""
        nonlocal t_phase
        now = time.perf_counter()
        if t_phase is not None:
            print(f"   ({now - t_phase:.0f} s)", flush=True)
        if msg:
            print(msg, flush=True)
        t_phase = now

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    zarr_path = out / "synthetic.zarr"  # free unless --overwrite: checked by _precheck
    step("1/4 generating the synthetic slide (H&E + known dense expression) ...")
    # only the 8 µm truth bins are scored: the 2/16 µm ones (190 000 polygons) would only cost time
    sdata = datasets.synthetic(seed=seed, width_um=width_um, height_um=height_um, bins_um=(8,))
    sdata.write(zarr_path, overwrite=True)
    with quiet_ome_zarr():
        sdata = sd.read_zarr(zarr_path)
    print(summary(sdata))
    step(f"2/4 training PixNet on the legacy ST + Visium spots only ({epochs} epochs) ...")
    model = PixNet(decoder_channels=32, train_mpp=2.0, tile_size=192)
    model.train(
        sdata,
        tables=["st_spots", "visium_spots"],
        n_top_genes=genes,
        max_epochs=epochs,
        steps_per_epoch=steps,
        batch_size=4,
        seed=seed,
        progress=progress,
    )
    model_dir = model.save(out / "pixnet_model", overwrite=True)
    step("3/4 predicting the dense map, 2/8/16 µm bins and the true 8 µm bins' footprints ...")
    bins8 = "synthetic_square_008um"
    names = tl.predict_dense(sdata, model, shapes=[bins8], progress=progress)
    # honest numbers: the predicted 8 µm bins against the true expected expression of the same bins
    pred = f"{model.key}_{bins8}"
    per_gene, _ = tl.evaluate(sdata, pred=pred, truth="square_008um", layer="expected", ssim=False, ari=False)
    pcc = per_gene.set_index("gene")["pcc"]
    markers = sdata.tables["square_008um"].var["marker_of"]
    candidates = [g for g in model.genes if markers.get(g, "none") != "none"] or list(model.genes)
    gene = max(candidates, key=lambda g: pcc.get(g, float("-inf")))
    png = out / f"pixnet_{gene}.png"
    step(f"4/4 drawing {gene}: dense map over the H&E, true vs predicted 8 µm bins ...")
    demo_png(sdata, gene, png, pred=pred, truth="square_008um")
    step(None)
    print(
        f"\nper-gene PCC of predicted vs true 8 µm bins (trained on spots only): median {pcc.median():.3f}, "
        f"mean {pcc.mean():.3f} over {len(pcc)} genes"
    )
    print(f"added to the zarr: {', '.join(names)}")
    print(f"zarr:  {zarr_path}\nmodel: {model_dir}\nplot:  {png}")
    print(
        f"done in {time.perf_counter() - t_start:.0f} s after the imports (the demo takes {DEMO_TIME} in all; "
        "longer on a busy machine)."
    )
    return 0
