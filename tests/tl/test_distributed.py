"""``tl.predict_dense`` on a ``dask.distributed`` cluster of worker processes gives the local scheduler's results."""

from __future__ import annotations

import pickle

import dask
import numpy as np
import pandas as pd
import pytest
import spatialdata as sd

import stpredict as stp
from stpredict.model import PixNet

distributed = pytest.importorskip("distributed")
torch = pytest.importorskip("torch")

SMALL = {"encoder": "resnet18", "decoder_channels": 16, "train_mpp": 2.0, "tile_size": 128}
KW = {"bins_um": (16,), "chunk_size": 64, "progress": False}


@pytest.fixture(scope="module")
def slide():
    return stp.datasets.synthetic(
        width_um=384, height_um=320, n_genes=6, seed=2, bins_um=(16,), st_spots=False
    )


@pytest.fixture(scope="module")
def model(slide):
    torch.manual_seed(0)
    return PixNet(list(slide.tables["square_016um"].var_names[:4]), **SMALL)


@pytest.fixture(scope="module")
def client():
    # Worker processes of their own (the weights, the image and the mask have to pickle), one thread each. A dask
    # nanny starts workers with OMP_NUM_THREADS=1; here torch starts with the client's thread count instead,
    # because float32 convolutions sum in an order that depends on the threads torch started with (1 vs 2 threads
    # differ by ~2e-7): with the same start the workers run the same computation, so the maps are equal bit for bit.
    threads = {"distributed.nanny.pre-spawn-environ.OMP_NUM_THREADS": torch.get_num_threads()}
    with (
        dask.config.set(threads),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cl,
        distributed.Client(cl) as c,
    ):
        yield c


def _predict(sdata: sd.SpatialData, model, *, local: bool, **kwargs) -> list[str]:
    if local:  # the local threaded scheduler, although a distributed client is the default one
        with dask.config.set(scheduler="threads"):
            return stp.tl.predict_dense(sdata, model, **KW, **kwargs)
    return stp.tl.predict_dense(sdata, model, **KW, **kwargs)


def _assert_same(out: sd.SpatialData, ref: sd.SpatialData, names: list[str]) -> None:
    for name in names:
        if name in ref.images:
            a, b = (s[name]["scale0"].image.values for s in (out, ref))
            assert a.any()
            np.testing.assert_array_equal(a, b)
        elif name in ref.tables:
            a, b = out.tables[name], ref.tables[name]
            assert a.n_obs > 0
            np.testing.assert_array_equal(np.asarray(a.X), np.asarray(b.X))
            pd.testing.assert_frame_equal(a.obs, b.obs)
        else:
            assert out.shapes[name].geometry.geom_equals(ref.shapes[name].geometry).all()


def test_the_graph_holds_the_weights_once(slide, model):
    s = sd.SpatialData(images={"he": slide["synthetic_full_image"]})
    eng = model.engine(s, image_key="he", chunk_size=64)
    dense = eng.to_dask(np.ones(eng.shape[1:], bool))
    graph = dict(dense.__dask_graph__())
    engine_keys = [k for k in graph if str(k).startswith("stpredict-engine-")]
    assert len(engine_keys) == 1 and len(graph) == 1 + dense.npartitions
    # a block's task refers to the engine's key: it pickles to a few bytes, not to the network's weights
    block = next(v for k, v in graph.items() if k not in engine_keys)
    assert len(pickle.dumps(block)) < 10_000 < len(pickle.dumps(graph[engine_keys[0]]))
    # an unpickled engine (a worker's copy) sets itself up on first use and computes the same block
    with eng.running("cpu"):
        expected = eng.block(0, 64, 64, 128)
        copy = pickle.loads(pickle.dumps(eng))
    assert not copy._ready
    copy._setup_copy()
    assert copy._ready and copy.device.type == "cpu" and not copy.module.training
    np.testing.assert_array_equal(copy.block(0, 64, 64, 128), expected)


def test_a_tiff_slide_goes_to_the_workers_by_path(tmp_path, slide, model):
    # tifffile's zarr store holds an open file: the image pickles as its path, and a worker's copy reopens the file
    tif = stp.io.read_wsi(stp.datasets.write_slide(slide, tmp_path / "s.ome.tif"))
    eng = model.engine(tif, chunk_size=64)
    assert len(pickle.dumps(eng.pyramid)) < 100_000  # not the pixels (1024 x 1280 x 3 bytes)
    with eng.running("cpu"):
        expected = eng.block(0, 64, 64, 128)
        copy = pickle.loads(pickle.dumps(eng))
    copy._setup_copy()
    np.testing.assert_array_equal(copy.block(0, 64, 64, 128), expected)


def test_same_maps_and_tables_on_two_worker_processes(tmp_path, slide, model, client):
    el = {
        "images": {"he": slide["synthetic_full_image"]},
        "shapes": {"visium": slide["synthetic_visium_spots"]},
    }
    for name in ("ref", "out"):
        sd.SpatialData(**el).write(tmp_path / f"{name}.zarr")
    ref, out = sd.read_zarr(tmp_path / "ref.zarr"), sd.read_zarr(tmp_path / "out.zarr")  # lazy, from zarr
    names = _predict(ref, model, local=True, shapes=["visium"])
    with distributed.get_task_stream(client) as stream:
        assert _predict(out, model, local=False, shapes=["visium"]) == names
    # the blocks ran in both worker processes, each task writing its block into the store
    blocks = [t for t in stream.data if "_predict_block" in str(t["key"])]
    assert len(blocks) > 1 and len({t["worker"] for t in blocks}) == 2
    _assert_same(out, ref, names)
    _assert_same(sd.read_zarr(tmp_path / "out.zarr"), ref, names)
