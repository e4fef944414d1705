"""Build (and execute) the tutorial notebooks from the cells below.

    python tutorials/make_tutorials.py            # full run, stores executed notebooks
    STPREDICT_TUTORIAL_FAST=1 python tutorials/make_tutorials.py --no-save   # quick check

The notebooks read ``STPREDICT_TUTORIAL_FAST=1`` to use small settings (the test suite runs them that way).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent

SETUP = """\
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc
import squidpy as sq

import stpredict as stp

FAST = os.environ.get("STPREDICT_TUTORIAL_FAST") == "1"  # small settings, used by the test suite
stp.settings.verbosity = 1
stp.settings.progress_bar = False"""

HER2ST = [
    (
        "md",
        """\
# Breast tumour, end to end

Four consecutive sections (C2–C5) of one HER2-positive breast tumour, measured with legacy Spatial Transcriptomics
(100 µm spots on a 200 µm grid; Andersson et al., *Nature Communications* 12, 6012, 2021, CC BY 4.0). We train PixNet
on three sections, predict the fourth **densely**, evaluate against its measured spots, and use the predicted
16 µm bins with scanpy and squidpy as if they had been measured.

Absolute numbers are modest here: the encoder is a randomly initialised ResNet18 (no pretrained weights can be
downloaded on the machine that ran this) and four sections of one patient are few. Pass `encoder_weights=` with a
pathology-pretrained checkpoint for real numbers.""",
    ),
    (
        "code",
        SETUP
        + """
DATA_DIR = Path(os.environ.get("STPREDICT_HER2ST_DIR", "../../shared/data/her2st"))  # folder with C2..C5 files""",
    ),
    (
        "md",
        "## Load the sections\n`datasets.her2st` reads the local files; the pixel size is inferred from the spot grid.",
    ),
    (
        "code",
        """\
downsample = 4 if FAST else 1
sections = {s: stp.datasets.her2st(s, data_dir=DATA_DIR, downsample=downsample) for s in stp.datasets.HER2ST_SECTIONS}
for name, sdata in sections.items():
    mpp = sdata.tables["spots"].uns["stpredict"]["mpp"]
    print(f"{name}: {sdata.tables['spots'].n_obs} spots, {mpp:.3f} µm/px")""",
    ),
    (
        "md",
        "## Train on C2, C3, C4\nThe `cpu` preset: a light decoder, 2 µm pixels, 192 px tiles; genes are chosen on the training sections only.",
    ),
    (
        "code",
        """\
train = [sections[s] for s in ("C2", "C3", "C4")]
fast = {"max_epochs": 1, "steps_per_epoch": 3, "n_top_genes": 20, "tile_size": 128, "train_mpp": 4.0}
settings = fast if FAST else {"n_top_genes": 100}
model = stp.tl.train(train, tables="spots", preset="cpu", seed=0, **settings)
print(model)
model.history[-1]""",
    ),
    (
        "md",
        "## Predict C5 densely\nA 4 µm map, 8 and 16 µm bins over the tissue, and a table for C5's own spots.",
    ),
    (
        "code",
        """\
test = sections["C5"]
names = stp.tl.predict_dense(test, model, out_mpp=4.0, bins_um=(8, 16), shapes=["C5_spots"])
names""",
    ),
    (
        "md",
        "## Evaluate against the measured spots\nThe measured counts get the model's normalisation; PCC per gene is summarised as PCC@F/S/M.",
    ),
    (
        "code",
        """\
per_gene, summary = stp.tl.evaluate(test, pred="pixnet_C5_spots", truth="spots", model=model)
summary""",
    ),
    (
        "code",
        """\
stp.pl.gene_scores(per_gene, show=False)
per_gene.sort_values("pcc", ascending=False).head(10)""",
    ),
    ("md", "## Expression maps of breast-cancer genes"),
    (
        "code",
        """\
genes = [g for g in ("ERBB2", "FASN", "GNAS") if g in model.genes] or model.genes[:3]
fig, axes = plt.subplots(1, len(genes), figsize=(5.5 * len(genes), 5), layout="constrained")
for ax, gene in zip(np.atleast_1d(axes), genes, strict=False):
    stp.pl.expression_map(test, gene, ax=ax, show=False)
plt.show()""",
    ),
    (
        "code",
        """\
stp.pl.compare(test, genes[0], pred="pixnet_C5_spots", truth="spots", model=model, show=False)
plt.show()""",
    ),
    (
        "md",
        """\
## Domains: Leiden on predicted 16 µm bins vs Leiden on measured spots
Each spot takes the majority cluster of the predicted bins whose centres fall inside it.""",
    ),
    (
        "code",
        """\
from scipy.spatial import cKDTree
from sklearn.metrics import adjusted_rand_score

from stpredict.model import normalize_counts

bins = test.tables["pixnet_square_016um"]
sc.pp.pca(bins, n_comps=min(20, bins.n_vars - 1))
sc.pp.neighbors(bins, random_state=0)
sc.tl.leiden(bins, resolution=0.5, flavor="igraph", n_iterations=2, random_state=0)

measured = sc.AnnData(normalize_counts(test.tables["spots"], model.recipe))
sc.pp.pca(measured, n_comps=min(20, measured.n_vars - 1))
sc.pp.neighbors(measured, n_neighbors=10, random_state=0)
sc.tl.leiden(measured, resolution=0.5, flavor="igraph", n_iterations=2, random_state=0)

radius = test["C5_spots"].radius.iloc[0]
tree = cKDTree(bins.obsm["spatial"])
labels = bins.obs["leiden"].to_numpy()
transferred = [
    (lambda idx: max(set(labels[idx]), key=list(labels[idx]).count) if idx else "none")(idx)
    for idx in tree.query_ball_point(test.tables["spots"].obsm["spatial"], r=radius)
]
print("ARI, predicted-bin domains vs measured-spot domains:", round(adjusted_rand_score(measured.obs["leiden"], transferred), 3))""",
    ),
    ("md", "## Spatial autocorrelation of predicted genes (squidpy)"),
    (
        "code",
        """\
sq.gr.spatial_neighbors_grid(bins, n_neighs=4)
sq.gr.spatial_autocorr(bins, mode="moran", n_perms=None, show_progress_bar=False)
bins.uns["moranI"].head(10)""",
    ),
]

SCALES = [
    (
        "md",
        """\
# One model, every scale

PixNet predicts a dense map, so a model trained on one footprint size can be queried at any other. On the synthetic
slide the true expression is known everywhere, so we can check that claim exactly (the analogue of the paper's
cross-scale experiment): train on legacy ST **100 µm spots only**, then predict 55 µm Visium spots and 2/8/16 µm
Visium HD bins and compare each with the truth of the same footprints.""",
    ),
    ("code", SETUP),
    (
        "code",
        """\
size = {"width_um": 640, "height_um": 512, "n_genes": 12} if FAST else {"n_genes": 50}
sdata = stp.datasets.synthetic(seed=0, **size)
sdata""",
    ),
    ("md", "## Train on 100 µm spots only"),
    (
        "code",
        """\
model = stp.model.PixNet(decoder_channels=32, train_mpp=2.0, tile_size=128 if FAST else 192)
fit = {"max_epochs": 1, "steps_per_epoch": 3} if FAST else {"max_epochs": 8, "steps_per_epoch": 25}
model.train(sdata, tables="st_spots", n_top_genes=size["n_genes"], batch_size=4, seed=0, **fit)
model.history[-1]""",
    ),
    ("md", "## Query every footprint the slide has"),
    (
        "code",
        """\
scales = ["st_spots", "visium_spots", "square_016um", "square_008um", "square_002um"]
stp.tl.predict_dense(sdata, model, bins_um=(), shapes=[f"synthetic_{s}" for s in scales])""",
    ),
    (
        "md",
        "## Compare with the truth at each scale\nThe truth is the simulated *expected* counts of each footprint, normalised with the model's recipe.",
    ),
    (
        "code",
        """\
import pandas as pd

rows = {}
for s in scales:
    _, summary = stp.tl.evaluate(sdata, pred=f"pixnet_synthetic_{s}", truth=s, layer="expected", ari=False, ssim=False)
    rows[s] = summary.loc["synthetic", ["n_footprints", "PCC@F", "PCC@S", "PCC@M", "MSE", "MAE"]]
pd.DataFrame(rows).T""",
    ),
    ("md", "## The true and the predicted map of a marker gene"),
    (
        "code",
        """\
truth = sdata["synthetic_truth"].values  # expected UMIs per 2 µm bin, (genes, y, x)
total = truth.sum(0)
genes = list(sdata["synthetic_truth"].c.values)
markers = sdata.tables["square_008um"].var["marker_of"]
gene = next(g for g in model.genes if markers[g] != "none")
true_map = np.log1p(np.divide(truth[genes.index(gene)], total, out=np.zeros_like(total), where=total > 0) * 1e4)
pred_map = sdata["pixnet_dense"]["scale0"].image.sel(c=gene).values
tissue = total > 0
vmin, vmax = np.percentile(true_map[tissue], [1, 99])
fig, axes = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
fig.suptitle(f"{gene} ({markers[gene]} marker), 2 µm map; the model saw only 100 µm spots")
for ax, img, title in ((axes[0], true_map, "true"), (axes[1], pred_map, "predicted")):
    im = ax.imshow(np.where(tissue, img, np.nan), vmin=vmin, vmax=vmax, cmap="magma")
    ax.set_title(title)
    ax.axis("off")
fig.colorbar(im, ax=axes, fraction=0.03, label="log1p normalised")
plt.show()""",
    ),
]

HNE_ONLY = [
    (
        "md",
        """\
# Predict expression for H&E-only slides

The point of PixNet for most users: train once on the spatial data you have, then get dense expression maps for the
H&E slides you have, usually scanner files with no spatial data at all. Here the model is trained on three HER2ST
sections (C2–C4) as in {doc}`her2st_end_to_end`, and the held-out section C5 is saved as a **pyramidal OME-TIFF** with
nothing but its pixels and pixel size, a stand-in for a scanner's file. From there on the notebook sees only that file:
`io.read_wsi` → `tl.predict_dense` → 16 µm bins → scanpy Leiden domains → squidpy Moran's I → `pl.expression_map`.

The same from a shell: `stpredict info C5.ome.tif` and
`stpredict predict C5.ome.tif --model model/ --out C5.zarr --bins 16`.""",
    ),
    (
        "code",
        SETUP
        + """
import tempfile

DATA_DIR = Path(os.environ.get("STPREDICT_HER2ST_DIR", "../../shared/data/her2st"))  # folder with C2..C5 files
WORK = Path(tempfile.mkdtemp())  # the model and the "scanner file" go here""",
    ),
    ("md", "## Train on C2, C3, C4 and save the model"),
    (
        "code",
        """\
downsample = 4 if FAST else 1
train_sections = ("C2",) if FAST else ("C2", "C3", "C4")
train = [stp.datasets.her2st(s, data_dir=DATA_DIR, downsample=downsample) for s in train_sections]
fast = {"max_epochs": 1, "steps_per_epoch": 3, "n_top_genes": 20, "tile_size": 128, "train_mpp": 4.0}
model = stp.tl.train(train, tables="spots", preset="cpu", seed=0, **(fast if FAST else {"n_top_genes": 100}))
model.save(WORK / "model", overwrite=True)
model""",
    ),
    (
        "md",
        """\
## A held-out section as a scanner file
C5's H&E is written as a tiled, pyramidal OME-TIFF (256 px tiles, each level half the previous one) that records its
pixel size in the OME metadata and the TIFF resolution tags, like a converted whole-slide scan. Its spots and counts
are left behind.""",
    ),
    (
        "code",
        """\
c5 = stp.datasets.her2st("C5", data_dir=DATA_DIR, downsample=downsample)
slide_file = stp.datasets.write_slide(c5, WORK / "C5.ome.tif", overwrite=True)
del c5
print(stp.io.slide_info(slide_file).describe())""",
    ),
    (
        "md",
        """\
## Read it lazily
`io.read_wsi` builds the image element from the file's own pyramid levels as dask arrays: nothing is decoded yet.
SVS, NDPI, MRXS (with `pip install 'stpredict[wsi]'`), generic TIFF and plain JPEG/PNG files are read the same way;
`mpp=` overrides or supplies the pixel size.""",
    ),
    (
        "code",
        """\
slide = stp.io.read_wsi(slide_file, dataset_id="C5")
print(f"{stp.pp.get_mpp(slide, 'C5_full_image'):.4f} µm/px")
slide""",
    ),
    (
        "md",
        """\
## Predict densely
A 4 µm map and 16 µm bins over the tissue; each block reads the coarsest level fine enough for the model. Every
prediction table records in `uns["stpredict"]` what its values are, which model made them, the genes, the pixel size
and the footprint.""",
    ),
    (
        "code",
        """\
names = stp.tl.predict_dense(slide, model, out_mpp=4.0, bins_um=(16,))
bins = slide.tables["pixnet_square_016um"]
print(names)
print(bins.uns["stpredict"]["values"])  # what X holds, in words (also: model_info, footprint, mpp, recipe)
bins""",
    ),
    ("md", "## Dense maps of breast-cancer genes"),
    (
        "code",
        """\
genes = [g for g in ("ERBB2", "FASN", "GNAS") if g in model.genes] or model.genes[:3]
fig, axes = plt.subplots(1, len(genes), figsize=(5.5 * len(genes), 5), layout="constrained")
for ax, gene in zip(np.atleast_1d(axes), genes, strict=False):
    stp.pl.expression_map(slide, gene, ax=ax, show=False)
plt.show()""",
    ),
    (
        "md",
        "## Domains on predicted 16 µm bins (scanpy)\nThe bins are an ordinary AnnData table: PCA, neighbours, Leiden.",
    ),
    (
        "code",
        """\
sc.pp.pca(bins, n_comps=min(20, bins.n_vars - 1))
sc.pp.neighbors(bins, random_state=0)
sc.tl.leiden(bins, resolution=0.5, flavor="igraph", n_iterations=2, random_state=0)
ax = sc.pl.embedding(bins, basis="spatial", color="leiden", size=12, show=False)
ax.invert_yaxis()
ax.set_aspect("equal")
plt.show()""",
    ),
    ("md", "## Spatial autocorrelation (squidpy)"),
    (
        "code",
        """\
sq.gr.spatial_neighbors_grid(bins, n_neighs=4)
sq.gr.spatial_autocorr(bins, mode="moran", n_perms=None, show_progress_bar=False)
bins.uns["moranI"].head(10)""",
    ),
    (
        "md",
        """\
## Keep the result
`slide.write("C5.zarr")` stores the H&E (decoded once, level by level), the map and the bins; `stpredict predict`
does the same from a shell. C5 does have measured spots: {doc}`her2st_end_to_end` scores the same kind of
prediction against them.""",
    ),
]

COARSE = [
    (
        "md",
        """\
# Train on coarse labels, predict fine

PixNet's map is meant to be right at scales **finer than its labels**. On real tissue this can be checked exactly:
the summed counts of a block of neighbouring spots *are* the measurement of the union of their disks. So we pool the
HER2ST spots of three sections into non-overlapping 3 × 3 blocks (~500 µm footprints, nine times fewer labels),
train on those only, and score the held-out section's **single measured 100 µm spots** — a scale the model never saw
a label for. Nothing is simulated.

The encoder starts from random weights here (none can be downloaded on the machine that ran this), and four sections
of one patient are few: read the numbers as a comparison between models, not as what a pretrained encoder reaches.""",
    ),
    (
        "code",
        SETUP
        + """
DATA_DIR = Path(os.environ.get("STPREDICT_HER2ST_DIR", "../../shared/data/her2st"))  # folder with C2..C5 files""",
    ),
    ("md", "## Pool the training sections' spots into 3 × 3 blocks"),
    (
        "code",
        """\
downsample = 4 if FAST else 1
sections = {s: stp.datasets.her2st(s, data_dir=DATA_DIR, downsample=downsample) for s in stp.datasets.HER2ST_SECTIONS}
train = [sections[s] for s in ("C2", "C3", "C4")]
for sdata in train:
    stp.pp.pool_footprints(sdata, "spots", size=3, complete=False)  # every block with what lies under tissue
pooled = train[0].tables["spots_pooled3"]
pooled""",
    ),
    (
        "md",
        """\
Each pooled row is a real measurement: `X` holds the exact sums of its members' counts, `obsm["members"]` the sparse
membership matrix (`X == members @ spots.X`), and the linked shapes are the exact unions of the member disks.""",
    ),
    (
        "code",
        """\
spots = train[0].tables["spots"]
assert abs(pooled.X - pooled.obsm["members"] @ spots.X).max() == 0
fig, ax = plt.subplots(figsize=(5, 5))
train[0]["spots_pooled3_shapes"].plot(ax=ax, column=np.arange(pooled.n_obs) % 7, cmap="tab10", alpha=0.7)
train[0]["C2_spots"].plot(ax=ax, facecolor="none", edgecolor="k", linewidth=0.3)
ax.invert_yaxis()
ax.set_title(f"C2: {spots.n_obs} spots pooled into {pooled.n_obs} blocks")
plt.show()""",
    ),
    (
        "md",
        """\
## Train PixNet and a linear probe on the blocks only
`tl.train` reads the footprints: spot-sized ones get the `cpu_spots` recipe, with a tile that holds a whole block.""",
    ),
    (
        "code",
        """\
fast = {"max_epochs": 1, "steps_per_epoch": 3, "n_top_genes": 20} if FAST else {}
model = stp.tl.train(train, tables="spots_pooled3", seed=0, **fast)
probe = stp.tl.train(
    train, tables="spots_pooled3", model="linear_probe", train_mpp=4.0, genes=model.genes, seed=0
)
print(model, probe, sep="\\n")""",
    ),
    (
        "md",
        "## Predict C5 at its single spots and as 16 and 8 µm bins",
    ),
    (
        "code",
        """\
import pandas as pd

test = sections["C5"]
stp.tl.predict_dense(test, model, bins_um=(8, 16), shapes=["C5_spots"])
stp.tl.predict_shapes(test, probe, shapes="C5_spots")
rows = {}
for name, key in (("PixNet", "pixnet_C5_spots"), ("LinearProbe", "linear_probe_C5_spots")):
    _, summary = stp.tl.evaluate(test, pred=key, truth="spots", model=model)
    rows[name] = summary.loc["C5", ["PCC@F", "PCC@S", "PCC@M", "MSE", "SSIM"]]
pd.DataFrame(rows).T""",
    ),
    (
        "md",
        """\
Both are dense models (the probe is a linear map of encoder features, averaged over each footprint), so both can be
asked for single spots. A spot-level regressor cannot: trained on 500 µm crops it sees a magnification it never
learned when asked for a 100 µm spot (`benchmarks/her2st_cross_scale.py` has all three, over folds and seeds).

## Finer still: the 8 µm bins of a marker gene
The map (left) has no label finer than 500 µm behind it; the predicted and the measured single spots (middle, right)
are the check we have at 100 µm.""",
    ),
    (
        "code",
        """\
gene = next((g for g in ("ERBB2", "FASN", "MUC1") if g in model.genes), model.genes[0])
fig, axes = plt.subplots(1, 3, figsize=(16, 5), layout="constrained")
stp.pl.expression_map(test, gene, ax=axes[0], show=False)
stp.pl.compare(test, gene, pred="pixnet_C5_spots", truth="spots", model=model, ax=axes[1:], show=False)
plt.show()
test.tables["pixnet_square_008um"]""",
    ),
]

NOTEBOOKS = {
    "her2st_end_to_end.ipynb": HER2ST,
    "one_model_every_scale.ipynb": SCALES,
    "her2st_hne_only_slides.ipynb": HNE_ONLY,
    "her2st_coarse_labels.ipynb": COARSE,
}


def build(cells) -> nbformat.NotebookNode:
    """A notebook from ``(kind, source)`` pairs."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
        for kind, src in cells
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = 3600) -> nbformat.NotebookNode:
    """Run every cell in ``tutorials/`` (as the docs and the tests do)."""
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
    ).execute()
    return nb


def main() -> None:
    """Build, execute and store the notebooks named on the command line (default: all)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("names", nargs="*", default=list(NOTEBOOKS))
    args = ap.parse_args()
    for name in args.names:
        t0 = time.perf_counter()
        nb = execute(build(NOTEBOOKS[name]))
        print(f"{name}: executed in {time.perf_counter() - t0:.0f} s")
        if not args.no_save:
            nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    main()
