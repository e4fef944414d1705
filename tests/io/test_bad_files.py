"""Bad paths and bad files at every reader: a typo, a folder for a file (and the reverse), a truncated copy.

Each error names the path, says what is wrong with it and how to fix it, at read time and from stpredict's
layer (the reading library's exception is chained as ``__cause__``), not later from inside a decoder.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from PIL import Image

import stpredict as stp

CORRUPT = r"looks truncated or corrupt"


def _truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _to_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside.txt").write_text("x")


def _names(err: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(err.value)
    assert str(path) in msg, msg


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def visium_outs(tmp_path_factory, synthetic_small):
    return stp.datasets.write_visium_outs(synthetic_small, tmp_path_factory.mktemp("visium") / "outs")


@pytest.fixture(scope="module")
def hd_outs(tmp_path_factory, synthetic_small):
    path = tmp_path_factory.mktemp("hd") / "outs"
    return stp.datasets.write_visium_hd_outs(synthetic_small, path, tables=["square_002um", "square_016um"])


@pytest.fixture(scope="module")
def hest_root(tmp_path_factory, synthetic_small):
    root = tmp_path_factory.mktemp("hest")
    stp.datasets.write_hest_sample(synthetic_small, root, "SYNV1", table="visium_spots")
    return root


@pytest.fixture(scope="module")
def ome(tmp_path_factory, synthetic_small):
    return stp.datasets.write_slide(synthetic_small, tmp_path_factory.mktemp("wsi") / "section.ome.tif")


@pytest.fixture(scope="module")
def he(synthetic_small):
    return synthetic_small["synthetic_full_image"]["scale0"].image.transpose("y", "x", "c").values


@pytest.fixture
def st(tmp_path, make_st_folder):
    return make_st_folder(tmp_path / "st")


def _copy(src: Path, tmp_path: Path) -> Path:
    return shutil.copytree(src, tmp_path / src.name)


# --- 1. typos and folder/file mix-ups ---------------------------------------------------------


def test_read_table_of_a_misspelt_store_says_it_does_not_exist(tmp_path):
    (tmp_path / "slide.zarr").mkdir()
    with pytest.raises(FileNotFoundError, match=r"does not exist.*Did you mean .*slide\.zarr") as err:
        stp.io.read_table(tmp_path / "slied.zarr", "pixnet_square_008um")
    _names(err, tmp_path / "slied.zarr")


def test_read_table_of_a_file_or_a_plain_folder_says_what_it_is(tmp_path):
    f = tmp_path / "slide.h5ad"
    f.write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        stp.io.read_table(f, "t")
    with pytest.raises(ValueError, match="not a SpatialData zarr store"):
        stp.io.read_table(tmp_path, "t")


@pytest.mark.parametrize(
    ("which", "expected"),
    [("counts", "counts"), ("spots", "spot table"), ("image", "H&E image")],
)
def test_read_st_folder_for_a_file(st, which, expected):
    _to_folder(st[which])
    with pytest.raises(
        IsADirectoryError, match=rf"(?s)is a folder, not a file.*expected [^\n]*{expected}"
    ) as err:
        stp.io.read_st(st["counts"], st["spots"], st["image"])
    _names(err, st[which])


def test_read_wsi_and_slide_info_folder_for_a_file(tmp_path):
    folder = tmp_path / "slide.svs"
    folder.mkdir()
    for read in (stp.io.read_wsi, stp.io.slide_info):
        with pytest.raises(IsADirectoryError, match=r"is a folder, not a file\. Expected the slide"):
            read(folder)


def test_read_wsi_typo_suggests_the_near_name(tmp_path, ome):
    with pytest.raises(FileNotFoundError, match=r"not found.*Did you mean .*section\.ome\.tif"):
        stp.io.read_wsi(ome.with_name("sectoin.ome.tif"))


@pytest.mark.parametrize("reader", ["visium", "visium_hd"])
def test_visium_readers_file_for_the_outs_folder(visium_outs, hd_outs, reader):
    if reader == "visium":
        f = visium_outs / "filtered_feature_bc_matrix.h5"
        call = lambda: stp.io.read_visium(f, dataset_id="v")  # noqa: E731
    else:
        f = hd_outs / "feature_slice.h5"
        call = lambda: stp.io.read_visium_hd(f, dataset_id="h")  # noqa: E731
    with pytest.raises(
        NotADirectoryError, match=r"is a file, not a folder\. Expected the Space Ranger `outs/`"
    ) as err:
        call()
    _names(err, f)


def test_read_visium_fullres_image_folder(tmp_path, visium_outs):
    outs = _copy(visium_outs, tmp_path)
    _to_folder(outs / "tissue_image.tif")
    with pytest.raises(IsADirectoryError, match=r"FOLDER  full-resolution image: .* is a folder, not a file"):
        stp.io.read_visium(outs, dataset_id="v", fullres_image_file="tissue_image.tif")


def test_read_visium_hd_fullres_image_typo_or_folder(tmp_path, hd_outs):
    with pytest.raises(FileNotFoundError, match=r"not found.*scan\.tif.*does not exist"):
        stp.io.read_visium_hd(hd_outs, dataset_id="h", fullres_image_file=tmp_path / "scan.tif")
    (tmp_path / "scan.tif").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder, not a file"):
        stp.io.read_visium_hd(hd_outs, dataset_id="h", fullres_image_file=tmp_path / "scan.tif")


def test_read_hest_file_for_the_folder_and_folder_for_a_sample_file(tmp_path, hest_root):
    wsi = hest_root / "wsis" / "SYNV1.tif"
    with pytest.raises(NotADirectoryError, match=r"is a file, not a folder\. Expected the HEST folder"):
        stp.io.read_hest(wsi, "SYNV1")
    root = _copy(hest_root, tmp_path)
    _to_folder(root / "st" / "SYNV1.h5ad")
    with pytest.raises(IsADirectoryError, match=r"FOLDER  st: .*SYNV1\.h5ad is a folder, not a file"):
        stp.io.read_hest(root, "SYNV1")


def test_local_dataset_loaders_say_when_the_data_dir_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)MISSING.*The folder .*nope does not exist"):
        stp.datasets.her2st("C2", data_dir=tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"(?s)MISSING.*The folder .*nope does not exist"):
        stp.datasets.hest("SYNV1", data_dir=tmp_path / "nope")


def test_local_dataset_loaders_file_for_the_data_dir(st):
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        stp.datasets.her2st("C2", data_dir=st["counts"])
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        stp.datasets.hest("SYNV1", data_dir=st["counts"])


# --- 2. truncated and corrupt files -----------------------------------------------------------

VISIUM_FILES = [
    "filtered_feature_bc_matrix.h5",
    "spatial/tissue_positions.csv",
    "spatial/scalefactors_json.json",
    "spatial/tissue_hires_image.png",
    "spatial/tissue_lowres_image.png",
    "tissue_image.tif",
]


@pytest.mark.parametrize("rel", VISIUM_FILES)
@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_read_visium_names_the_corrupt_file(tmp_path, visium_outs, rel, how):
    outs = _copy(visium_outs, tmp_path)
    if how == "truncated":
        _truncate(outs / rel)
    else:
        (outs / rel).write_bytes(b"\x00not what it should be\n" * 4)
    with pytest.raises(ValueError, match=rf"{CORRUPT}.*again") as err:
        stp.io.read_visium(outs, dataset_id="v", fullres_image_file="tissue_image.tif")
    _names(err, outs / rel)


def test_read_visium_positions_that_miss_spots_of_the_counts(tmp_path, visium_outs):
    """A positions file cut at a line end parses, but spots of the matrix have no position."""
    outs = _copy(visium_outs, tmp_path)
    pos = outs / "spatial" / "tissue_positions.csv"
    lines = pos.read_text().splitlines(keepends=True)
    pos.write_text("".join(lines[: len(lines) // 2]))
    with pytest.raises(ValueError, match=r"(?s)have no row in .*tissue_positions\.csv.*truncated") as err:
        stp.io.read_visium(outs, dataset_id="v")
    _names(err, pos)


HD_FILES = [
    "feature_slice.h5",
    "spatial/scalefactors_json.json",
    "spatial/tissue_hires_image.png",
    "spatial/tissue_lowres_image.png",
    "tissue_image.png",
    "binned_outputs/square_002um/filtered_feature_bc_matrix.h5",  # read as labels by stpredict
    "binned_outputs/square_002um/spatial/tissue_positions.parquet",
    "binned_outputs/square_016um/filtered_feature_bc_matrix.h5",  # read as shapes by spatialdata-io
    "binned_outputs/square_016um/spatial/tissue_positions.parquet",
    "binned_outputs/square_016um/spatial/scalefactors_json.json",
]


@pytest.mark.parametrize("rel", HD_FILES)
def test_read_visium_hd_names_the_truncated_file(tmp_path, hd_outs, rel):
    outs = _copy(hd_outs, tmp_path)
    _truncate(outs / rel)
    with pytest.raises(ValueError, match=rf"{CORRUPT}.*again") as err:
        stp.io.read_visium_hd(outs, dataset_id="h")
    _names(err, outs / rel)
    if not rel.endswith(".png"):  # a PNG's lost end chunk is found without an exception to chain
        assert err.value.__cause__ is not None


@pytest.mark.parametrize("fraction", [0.02, 0.5, 0.9, 0.999])
def test_truncated_slide_is_found_when_it_is_opened(tmp_path, ome, fraction):
    cut = tmp_path / "cut.ome.tif"
    shutil.copy(ome, cut)
    _truncate(cut, fraction)
    for read in (stp.io.slide_info, stp.io.read_wsi):
        with pytest.raises(ValueError, match=rf"Slide file .*cut\.ome\.tif.* {CORRUPT}"):
            read(cut)


@pytest.mark.parametrize("where", ["at the IFD", "in the IFD", "one byte short"])
@pytest.mark.parametrize("layout", ["OME SubIFDs", "HEST pages"])
def test_slide_cut_where_no_tile_is_lost_is_found_too(tmp_path, ome, hest_root, where, layout):
    """Cut at a reduced level's IFD (tifffile drops the level), or one byte short (the OME-XML tag is lost)."""
    import tifffile

    src = ome if layout == "OME SubIFDs" else hest_root / "wsis" / "SYNV1.tif"
    with tifffile.TiffFile(src) as tf:
        ifd = tf.series[0].levels[1].pages[0].offset
    data = src.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(
        data[: {"at the IFD": ifd, "in the IFD": ifd + 10, "one byte short": len(data) - 1}[where]]
    )
    with pytest.raises(ValueError, match=rf"Slide file .*cut\.tif.* {CORRUPT}"):
        stp.io.slide_info(cut)


def test_truncated_plain_slides(tmp_path, he):
    for name in ("he.png", "he.jpg"):
        path = tmp_path / name
        Image.fromarray(he).save(path)
        _truncate(path)
        with pytest.raises(ValueError, match=CORRUPT) as err:
            stp.io.read_wsi(path, mpp=0.5)
        _names(err, path)


@pytest.mark.parametrize("rel", ["st/SYNV1.h5ad", "metadata/SYNV1.json", "wsis/SYNV1.tif"])
def test_read_hest_names_the_truncated_file(tmp_path, hest_root, rel):
    root = _copy(hest_root, tmp_path)
    _truncate(root / rel)
    with pytest.raises(ValueError, match=rf"{CORRUPT}.*again") as err:
        stp.io.read_hest(root, "SYNV1")
    _names(err, root / rel)


@pytest.mark.parametrize("which", ["counts", "image"])
def test_read_st_truncated_files(st, which):
    _truncate(st[which])
    with pytest.raises(ValueError, match=CORRUPT) as err:
        stp.io.read_st(st["counts"], st["spots"], st["image"])
    _names(err, st[which])
    assert err.value.__cause__ is not None


@pytest.mark.parametrize("which", ["counts", "spots"])
def test_read_st_plain_tables_cut_mid_line(st, which):
    path = st[which]
    if which == "counts":  # an uncompressed copy: no gzip check, only the cut last row tells
        plain = path.with_name("S_counts.tsv")
        plain.write_bytes(gzip.decompress(path.read_bytes()))
        st = {**st, "counts": plain}
        path = plain
    text = path.read_text()
    path.write_text(text[: text.rindex("\t")])  # the last row loses its last field
    with pytest.raises(ValueError, match=rf"{CORRUPT} \(its last row .* has no value") as err:
        stp.io.read_st(st["counts"], st["spots"], st["image"])
    _names(err, path)


def test_corrupt_error_keeps_the_original_exception(tmp_path, visium_outs):
    outs = _copy(visium_outs, tmp_path)
    _truncate(outs / "filtered_feature_bc_matrix.h5")
    with pytest.raises(ValueError) as err:
        stp.io.read_visium(outs, dataset_id="v")
    assert isinstance(err.value.__cause__, OSError)  # h5py's own error, for whoever needs it
    assert "OSError" in str(err.value)
