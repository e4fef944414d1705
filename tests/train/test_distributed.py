"""Data-parallel training: 2 gloo processes under torchrun train as one process does, up to float order."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from scipy import sparse

import stpredict as stp
from stpredict._core import Recipe
from stpredict.model import PixNet
from stpredict.train import TileSampler, load_section
from stpredict.train._distributed import Distributed, distributed_from_env

# a small BN-free encoder (GroupNorm), trained: every layer sees the same numbers whether split or not
ARCH = {
    "encoder": "resnet10t",
    "encoder_kwargs": {"norm_layer": "GroupNorm1"},
    "decoder_channels": 16,
    "train_mpp": 2.0,
    "tile_size": 96,
}
FIT = {
    "tables": "square_016um",
    "validation": 1,
    "n_top_genes": 6,
    "max_epochs": 2,
    "steps_per_epoch": 2,
    "batch_size": 3,  # uneven shares: 2 tiles on rank 0, 1 on rank 1
    "patience": 1,
    "progress": False,
    "seed": 0,
}
LR = 5e-4

WORKER = """
import os, sys
import torch
import stpredict as stp
from stpredict._core import Recipe
from stpredict.model import PixNet

arch, fit = {arch!r}, {fit!r}
slides = [stp.datasets.synthetic(**kw) for kw in {slides!r}]
model = PixNet(**arch).train(slides, **fit)
torch.save({{"state": model.module.state_dict(), "history": model.history}},
           os.path.join(sys.argv[1], f"rank{{os.environ['RANK']}}.pt"))
"""


def _slides() -> list[dict]:
    common = {"n_genes": 8, "bins_um": (16,), "st_spots": False, "visium_spots": False}
    return [{"width_um": 256, "height_um": 224, "seed": s, **common} for s in (1, 2)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_train_as_one(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER.format(arch=ARCH, fit=FIT, slides=_slides())))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        os.fspath(script),
        os.fspath(tmp_path),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # the one-process reference, here, while the two processes start up
    alone = PixNet(**ARCH).train([stp.datasets.synthetic(**kw) for kw in _slides()], **FIT)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]

    # every rank ends with the same weights and the same records (early stopping agreed)
    for k, v in ranks[0]["state"].items():
        torch.testing.assert_close(ranks[1]["state"][k], v, rtol=0, atol=0)
    assert [h["epoch"] for h in ranks[0]["history"]] == [h["epoch"] for h in alone.history]

    # ... and those of one process with the same global batch, up to floating-point order
    for key in ("train_loss", "train_pcc", "val_loss", "val_pcc"):
        np.testing.assert_allclose(
            [h[key] for h in ranks[0]["history"]], [h[key] for h in alone.history], rtol=1e-4, atol=1e-5
        )
    ref = alone.module.state_dict()
    diffs = torch.cat(
        [(ranks[0]["state"][k] - v).abs().flatten() for k, v in ref.items() if v.is_floating_point()]
    )
    # Adam moves every weight by about lr per step whatever its gradient's size, so a weight whose
    # gradient is ~0 can take a step of a different sign from rounding alone: bound those by the steps,
    # and ask nearly every weight to agree closely
    steps = FIT["max_epochs"] * FIT["steps_per_epoch"]
    assert float(diffs.max()) < 2 * LR * steps
    assert float((diffs > 1e-5).float().mean()) < 0.01
    assert float(diffs.median()) < 1e-7


def test_a_batch_splits_into_its_tiles():
    sec = load_section(
        stp.datasets.synthetic(**_slides()[0]),
        image_key="synthetic_full_image",
        tables=["square_016um"],
        recipe=Recipe(["G000", "G001"]),
        train_mpp=2.0,
    )
    batch = TileSampler([sec], tile_size=64, seed=0).sample(5)
    parts = [batch.tiles(Distributed(r, 2, torch.device("cpu")).share(5)) for r in (0, 1)]
    assert [len(p.keys) for p in parts] == [3, 2]
    assert [int(p.tile_rows.sum()) for p in parts] == Distributed(0, 2, torch.device("cpu")).sizes(
        batch.tile_rows
    )
    np.testing.assert_array_equal(np.vstack([p.targets for p in parts]), batch.targets)
    torch.testing.assert_close(torch.cat([p.images for p in parts]), batch.images)
    assert (sparse.block_diag([p.A for p in parts]) != batch.A).nnz == 0


def test_distributed_from_env(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed_from_env(None, torch.device("cpu")) is None
    assert distributed_from_env(False, torch.device("cpu")) is None
    with pytest.raises(RuntimeError, match="torchrun"):
        distributed_from_env(True, torch.device("cpu"))
    with pytest.raises(TypeError, match="distributed"):
        distributed_from_env("yes", torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert distributed_from_env(False, torch.device("cpu")) is None


def test_shares_cover_the_batch():
    for n, world in [(8, 4), (5, 2), (3, 3), (7, 3)]:
        shares = [Distributed(r, world, torch.device("cpu")).share(n) for r in range(world)]
        assert [i for s in shares for i in range(n)[s]] == list(range(n))
        assert max(len(range(n)[s]) for s in shares) - min(len(range(n)[s]) for s in shares) <= 1


def test_models_without_a_distributed_plan_refuse(monkeypatch, synthetic_small):
    from stpredict.model import SpotRegressor

    monkeypatch.setattr(
        "stpredict.model._trained.distributed_from_env", lambda *a: Distributed(0, 2, torch.device("cpu"))
    )
    with pytest.raises(NotImplementedError, match="distributed=False"):
        SpotRegressor().train(synthetic_small, tables="st_spots", progress=False)


def test_other_ranks_log_warnings_only(monkeypatch):
    from stpredict._logging import logger
    from stpredict.train._distributed import quiet_other_ranks

    before = list(logger.filters)
    quiet_other_ranks()  # rank 0 (or no torchrun): nothing changes
    assert logger.filters == before
    monkeypatch.setenv("RANK", "1")
    try:
        quiet_other_ranks()
        quiet_other_ranks()
        added = [f for f in logger.filters if f not in before]
        assert len(added) == 1
        info = logger.makeRecord("stpredict", 20, __file__, 0, "info", (), None)
        warning = logger.makeRecord("stpredict", 30, __file__, 0, "warning", (), None)
        assert not added[0].filter(info) and added[0].filter(warning)
    finally:
        for f in logger.filters[:]:
            if f not in before:
                logger.removeFilter(f)
