from __future__ import annotations

import numpy as np
import pytest
import spatialdata as sd
import tifffile
from PIL import Image
from spatialdata.transformations import get_transformation

import stpredict as stp
from stpredict.model import PixNet

SMALL = {"encoder": "resnet18", "decoder_channels": 16, "train_mpp": 2.0, "tile_size": 128}


@pytest.fixture(scope="module")
def slide():
    return stp.datasets.synthetic(
        width_um=640, height_um=512, n_genes=6, seed=2, bins_um=(16,), st_spots=False
    )


@pytest.fixture(scope="module")
def he(slide):
    return slide["synthetic_full_image"]["scale0"].image.transpose("y", "x", "c").values


@pytest.fixture(scope="module")
def ome(tmp_path_factory, slide):
    return stp.datasets.write_slide(slide, tmp_path_factory.mktemp("wsi") / "section.ome.tif")


@pytest.fixture
def decoded(monkeypatch):
    """Record the shape of the level behind every image tile tifffile decodes for a zarr store."""
    from tifffile.zarr import ZarrTiffStore

    seen: list[tuple[int, ...]] = []
    get = ZarrTiffStore.get

    async def spy(self, key, *args, **kwargs):
        if not key.endswith(("zarr.json", ".zarray", ".zattrs", ".zgroup")):
            seen.append(tuple(self._data[0].shape))
        return await get(self, key, *args, **kwargs)

    monkeypatch.setattr(ZarrTiffStore, "get", spy)
    return seen


def test_ome_tiff_is_read_lazily_with_its_pyramid_and_pixel_size(ome, he, decoded):
    sdata = stp.io.read_wsi(ome)
    assert decoded == []  # opening reads metadata only
    key = "section_full_image"
    assert list(sdata.images) == [key]
    assert stp.pp.get_mpp(sdata, key) == 0.5  # exactly, from OME PhysicalSizeX/Y
    el = sdata[key]
    assert [el[k].image.shape[1:] for k in el.children] == [(1024, 1280), (512, 640), (256, 320)]
    assert {"section", "section_um"} <= set(get_transformation(el, get_all=True))
    record = sdata.attrs["stpredict"]["slide"]
    assert record["mpp_source"] == "OME PhysicalSizeX/Y" and record["format"] == "OME-TIFF"
    assert decoded == []
    np.testing.assert_array_equal(el["scale0"].image.transpose("y", "x", "c").values, he)
    # the reduced levels are the file's own (2 x 2 means), placed by their size
    np.testing.assert_array_equal(
        el["scale1"].image.values[:, 0, 0], he[:2, :2].reshape(-1, 3).mean(0).round().astype(np.uint8)
    )


def test_predict_dense_reads_only_the_level_it_needs_and_matches_in_memory(slide, ome, decoded):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = PixNet(list(slide.tables["square_016um"].var_names[:4]), **SMALL)
    sdata = stp.io.read_wsi(ome, dataset_id="s")
    stp.tl.predict_dense(sdata, model, bins_um=[16], progress=False)
    level0 = (1024, 1280, 3)
    assert decoded and level0 not in decoded  # a 2 µm model on a 0.5 µm slide reads the 1/4 level only
    # the same pyramid held in memory gives the same map: reading lazily changes nothing
    in_memory = stp.io.read_wsi(ome, dataset_id="s")
    in_memory.images["s_full_image"] = in_memory["s_full_image"].persist()
    stp.tl.predict_dense(in_memory, model, bins_um=[16], progress=False)
    got = sdata["pixnet_dense"]["scale0"].image.values
    np.testing.assert_array_equal(got, in_memory["pixnet_dense"]["scale0"].image.values)
    # and the synthetic slide's own pyramid (levels rounded differently, by at most 1) nearly the same one
    ref = sd.SpatialData(images={"he": slide["synthetic_full_image"]})
    stp.tl.predict_dense(ref, model, bins_um=[16], progress=False)
    want = ref["pixnet_dense"]["scale0"].image.values
    on, on_ref = (got != 0).any(0), (want != 0).any(0)  # predicted pixels: the tissue mask of each pyramid
    assert (on != on_ref).mean() < 1e-3  # the masks differ only by a few edge pixels
    np.testing.assert_allclose(got[:, on & on_ref], want[:, on & on_ref], atol=0.01)
    assert sdata.tables["pixnet_square_016um"].n_obs == ref.tables["pixnet_square_016um"].n_obs


def test_written_store_reads_back(tmp_path, ome, he):
    sdata = stp.io.read_wsi(ome, dataset_id="s")
    sdata.write(tmp_path / "s.zarr")
    back = sd.read_zarr(tmp_path / "s.zarr")
    assert stp.pp.get_mpp(back, "s_full_image") == 0.5
    np.testing.assert_array_equal(back["s_full_image"]["scale0"].image.transpose("y", "x", "c").values, he)
    assert back.attrs["stpredict"]["slide"]["reader"] == "read_wsi"


@pytest.mark.parametrize(
    ("resolution", "unit", "mpp"),
    [((20000, 20000), "CENTIMETER", 0.5), ((101600, 101600), "INCH", 0.25)],
)
def test_plain_tiff_resolution_tags(tmp_path, he, resolution, unit, mpp):
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, he, photometric="rgb", tile=(256, 256), resolution=resolution, resolutionunit=unit)
    sdata = stp.io.read_wsi(path)
    assert stp.pp.get_mpp(sdata, "flat_full_image") == pytest.approx(mpp, rel=1e-9)
    assert len(sdata["flat_full_image"].children) == 1  # no pyramid in the file: none made up


def test_pixel_size_missing_or_implausible_needs_mpp(tmp_path, he):
    none = tmp_path / "none.tif"
    tifffile.imwrite(none, he, photometric="rgb", resolutionunit="NONE")
    with pytest.raises(ValueError, match=r"does not record its pixel size.*Pass `mpp=`"):
        stp.io.read_wsi(none)
    assert stp.pp.get_mpp(stp.io.read_wsi(none, mpp=0.25), "none_full_image") == 0.25
    screen = tmp_path / "screen.tif"  # 72 dpi: a screen default, not a microscope
    tifffile.imwrite(screen, he, photometric="rgb", resolution=(72, 72), resolutionunit="INCH")
    with pytest.raises(ValueError, match=r"352\.8 µm/px.*outside the plausible"):
        stp.io.read_wsi(screen)
    with pytest.raises(ValueError, match="outside the plausible range"):
        stp.io.read_wsi(screen, mpp=500)


def test_anisotropic_pixels_need_mpp(tmp_path, he):
    path = tmp_path / "aniso.tif"
    tifffile.imwrite(path, he, photometric="rgb", resolution=(20000, 10000), resolutionunit="CENTIMETER")
    info = stp.io.slide_info(path)  # describing the file works
    assert info.mpp is None and "anisotropic" in info.mpp_source
    with pytest.raises(ValueError, match="anisotropic"):
        stp.io.read_wsi(path)
    assert stp.pp.get_mpp(stp.io.read_wsi(path, mpp=0.5), "aniso_full_image") == 0.5


def test_z_stack_reads_the_first_plane(tmp_path, he):
    path = tmp_path / "stack.ome.tif"
    stack = np.stack([he, 255 - he])
    tifffile.imwrite(
        path, stack, photometric="rgb", metadata={"axes": "ZYXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
    )
    sdata = stp.io.read_wsi(path)
    np.testing.assert_array_equal(
        sdata["stack_full_image"]["scale0"].image.transpose("y", "x", "c").values, he
    )


def test_write_over_an_existing_store(tmp_path, ome):
    sdata = stp.io.read_wsi(ome, dataset_id="s")
    sdata.write(tmp_path / "s.zarr")
    again = stp.io.read_wsi(ome, dataset_id="s")
    again.write(tmp_path / "s.zarr", overwrite=True)  # spatialdata's check for self-overwriting accepts it
    assert stp.pp.get_mpp(sd.read_zarr(tmp_path / "s.zarr"), "s_full_image") == 0.5


def test_aperio_svs_description(tmp_path, he):
    path = tmp_path / "scan.svs"
    desc = (
        "Aperio Image Library v12.0.5\r\n1280x1024 [0,0 1280x1024] (256x256) RAW/RGB|AppMag = 40|MPP = 0.2520"
    )
    with tifffile.TiffWriter(path) as tw:
        tw.write(he, tile=(256, 256), photometric="rgb", description=desc)
        tw.write(he[::8, ::8].copy(), photometric="rgb", description="Aperio Image Library v12.0.5\r\nthumb")
        tw.write(he[::4, ::4].copy(), tile=(256, 256), photometric="rgb", description="Aperio Image Library")
    info = stp.io.slide_info(path)
    assert info.format == "Aperio SVS" and info.mpp == pytest.approx(0.252)
    assert info.levels[:2] == [(1024, 1280), (256, 320)]
    sdata = stp.io.read_wsi(path)
    assert stp.pp.get_mpp(sdata, "scan_full_image") == pytest.approx(0.252)
    assert "Aperio SVS" in info.describe() and "0.32 x 0.26 mm" in info.describe()


def test_png_and_jpeg(tmp_path, he):
    png = tmp_path / "he.png"
    Image.fromarray(he).save(png, dpi=(50800, 50800))  # 0.5 µm/px
    sdata = stp.io.read_wsi(png, dataset_id="p")
    assert stp.pp.get_mpp(sdata, "p_full_image") == pytest.approx(0.5, rel=1e-3)
    assert len(sdata["p_full_image"].children) >= 2  # a pyramid is computed for plain images
    np.testing.assert_array_equal(sdata["p_full_image"]["scale0"].image.transpose("y", "x", "c").values, he)
    jpg = tmp_path / "he.jpg"
    Image.fromarray(he).save(jpg, quality=95)
    with pytest.raises(ValueError, match="JPEG files do not record a pixel size"):
        stp.io.read_wsi(jpg)
    assert stp.pp.get_mpp(stp.io.read_wsi(jpg, mpp=0.5), "he_full_image") == 0.5


def test_bad_slides(tmp_path, he):
    with pytest.raises(FileNotFoundError, match="not found"):
        stp.io.read_wsi(tmp_path / "missing.svs")
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, he[..., 0])
    with pytest.raises(ValueError, match="no RGB image"):
        stp.io.read_wsi(grey, mpp=0.5)
    deep = tmp_path / "deep.tif"
    tifffile.imwrite(deep, he.astype(np.uint16), photometric="rgb")
    with pytest.raises(ValueError, match=r"uint16 pixels.*8-bit"):
        stp.io.read_wsi(deep, mpp=0.5)
    other = tmp_path / "slide.xyz"
    other.write_bytes(b"0")
    with pytest.raises(ValueError, match=r"does not know '\.xyz'"):
        stp.io.read_wsi(other)
    with pytest.raises(ValueError, match="not a TIFF"):
        stp.io.read_wsi(tmp_path / "slide.xyz", backend="tifffile")
    with pytest.raises(ValueError, match="not a valid element name"):
        stp.io.read_wsi(grey, mpp=0.5, dataset_id="a/b")


def test_openslide_backend_matches_tifffile(tmp_path, he):
    pytest.importorskip("openslide")
    path = tmp_path / "generic.tif"
    tifffile.imwrite(
        path, he, photometric="rgb", tile=(256, 256), resolution=(2e4, 2e4), resolutionunit="CENTIMETER"
    )
    a = stp.io.read_wsi(path, backend="openslide", dataset_id="a")
    assert a.attrs["stpredict"]["slide"]["backend"] == "openslide"
    assert stp.pp.get_mpp(a, "a_full_image") == pytest.approx(0.5)
    np.testing.assert_array_equal(a["a_full_image"]["scale0"].image.transpose("y", "x", "c").values, he)


def test_write_slide_takes_a_large_jpeg_itself(tmp_path, he, monkeypatch):
    """A JPEG export goes straight to a pyramidal OME-TIFF, without the user lifting Pillow's size limit."""
    jpg = tmp_path / "export.jpg"
    Image.fromarray(he).save(jpg, quality=95)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", he.shape[0] * he.shape[1] // 4)  # "too large" for Pillow
    with pytest.raises(ValueError, match=r"Pass `mpp=`.*scanner's value.*spot pitch"):
        stp.datasets.write_slide(jpg, tmp_path / "nope.ome.tif")
    out = stp.datasets.write_slide(jpg, tmp_path / "export.ome.tif", mpp=0.5)
    info = stp.io.slide_info(out)
    assert info.mpp == pytest.approx(0.5)
    back = stp.io.read_wsi(out)
    img = back.images[next(iter(back.images))]
    assert img["scale0"].image.shape == (3, *he.shape[:2])
