from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# pytest-xdist: one process per core; keep torch/BLAS from oversubscribing the cores (set before torch loads)
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, str(_threads))

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def _her2st_dir() -> Path | None:
    for cand in (os.environ.get("STPREDICT_HER2ST_DIR"), REPO.parent / "shared" / "data" / "her2st"):
        if cand and (Path(cand) / "C2_counts.tsv.gz").is_file():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def her2st_dir() -> Path:
    d = _her2st_dir()
    if d is None:
        pytest.skip(
            "HER2ST sections not found: set STPREDICT_HER2ST_DIR or place them in ../shared/data/her2st "
            "next to the checkout."
        )
    return d


@pytest.fixture(scope="session")
def synthetic_small():
    """A small synthetic slide shared by read-only tests (copy before mutating)."""
    import stpredict as stp

    return stp.datasets.synthetic(width_um=480, height_um=416, n_genes=12, seed=1)


def write_st_folder(
    path: Path,
    *,
    n_x: int = 6,
    n_y: int = 5,
    pitch_px: float = 50.0,
    offset: tuple[float, float] = (40.0, 30.0),
    size: tuple[int, int] = (320, 300),
    n_genes: int = 7,
    seed: int = 0,
    image_mode: str = "RGB",
) -> dict[str, Path]:
    """A tiny section in the HER2ST layout: counts TSV (gz), spot table, JPEG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(1, n_x + 1), np.arange(1, n_y + 1))
    xs, ys = xs.ravel(), ys.ravel()
    ids = [f"{x}x{y}" for x, y in zip(xs, ys, strict=True)]
    spots = pd.DataFrame(
        {
            "x": xs,
            "y": ys,
            "new_x": xs + 0.01,
            "new_y": ys - 0.01,
            "pixel_x": offset[0] + (xs - 1) * pitch_px + rng.normal(0, 0.5, xs.size),
            "pixel_y": offset[1] + (ys - 1) * pitch_px + rng.normal(0, 0.5, xs.size),
            "selected": 1,
        }
    )
    counts = pd.DataFrame(
        rng.poisson(3, (len(ids), n_genes)), index=ids, columns=[f"GENE{i}" for i in range(n_genes)]
    )
    path.mkdir(parents=True, exist_ok=True)
    files = {"counts": path / "S_counts.tsv.gz", "spots": path / "S_spots.tsv", "image": path / "S_HE.jpg"}
    counts.to_csv(files["counts"], sep="\t")
    spots.to_csv(files["spots"], sep="\t", index=False)
    img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    pil = Image.fromarray(img)
    if image_mode != "RGB":
        pil = pil.convert(image_mode)
        files["image"] = path / "S_HE.png"
    pil.save(files["image"])
    return files


@pytest.fixture
def make_st_folder():
    """Factory writing a tiny HER2ST-layout section (see :func:`write_st_folder`)."""
    return write_st_folder


@pytest.fixture(scope="session")
def st_folder_writer():
    """:func:`write_st_folder` for module- and session-scoped fixtures."""
    return write_st_folder
