from __future__ import annotations

import numpy as np
import pytest
import spatialdata as sd
from spatialdata.models import Image2DModel, ShapesModel
from spatialdata.transformations import Affine, Identity, Scale, get_transformation

import stpredict as stp


def _plain_sdata():
    img = Image2DModel.parse(
        np.zeros((3, 40, 60), np.uint8), dims=("c", "y", "x"), transformations={"global": Identity()}
    )
    small = Image2DModel.parse(
        np.zeros((3, 10, 15), np.uint8),
        dims=("c", "y", "x"),
        transformations={"global": Scale([4, 4], axes=("x", "y"))},
    )
    circles = ShapesModel.parse(
        np.array([[10.0, 20.0]]), geometry=0, radius=np.array([5.0]), transformations={"global": Identity()}
    )
    return sd.SpatialData(images={"he": img, "he_small": small}, shapes={"spots": circles})


def test_get_mpp_synthetic(synthetic_small):
    assert stp.pp.get_mpp(synthetic_small, "synthetic_full_image") == pytest.approx(0.5)
    assert stp.pp.get_mpp(synthetic_small, "synthetic_truth") == pytest.approx(2.0)


def test_unknown_mpp_error_says_how_to_fix():
    sdata = _plain_sdata()
    with pytest.raises(
        ValueError, match=r"no known pixel size.*stpredict\.pp\.set_mpp\(sdata, 'he', mpp=\.\.\.\)"
    ):
        stp.pp.get_mpp(sdata, "he")
    with pytest.raises(KeyError, match="available images"):
        stp.pp.get_mpp(sdata, "nope")


def test_set_mpp_extends_every_element_in_the_pixel_system():
    sdata = _plain_sdata()
    assert stp.pp.set_mpp(sdata, "he", 0.25) == "um"
    assert stp.pp.get_mpp(sdata, "he") == pytest.approx(0.25)
    # the 4x downsampled image and the shapes got the same micron system, consistently
    assert stp.pp.get_mpp(sdata, "he_small") == pytest.approx(1.0)
    t = get_transformation(sdata["spots"], "um").to_affine_matrix(("x", "y"), ("x", "y"))
    np.testing.assert_allclose(t @ [10, 20, 1], [2.5, 5.0, 1])
    # same value again is a no-op; a different value needs overwrite
    stp.pp.set_mpp(sdata, "he", 0.25)
    with pytest.raises(ValueError, match="overwrite=True"):
        stp.pp.set_mpp(sdata, "he", 0.5)
    stp.pp.set_mpp(sdata, "he", 0.5, overwrite=True)
    assert stp.pp.get_mpp(sdata, "he_small") == pytest.approx(2.0)
    with pytest.raises(ValueError, match="must be > 0"):
        stp.pp.set_mpp(sdata, "he", -1)


def test_rotation_is_not_a_pixel_size_change_but_anisotropy_is_an_error():
    sdata = _plain_sdata()
    th = np.deg2rad(3)
    rot = Affine(
        np.array(
            [[0.5 * np.cos(th), -0.5 * np.sin(th), 0], [0.5 * np.sin(th), 0.5 * np.cos(th), 0], [0, 0, 1]]
        ),
        input_axes=("x", "y"),
        output_axes=("x", "y"),
    )
    from spatialdata.transformations import set_transformation

    set_transformation(sdata["he"], rot, "C9_um")
    assert stp.pp.get_mpp(sdata, "he") == pytest.approx(0.5)
    set_transformation(sdata["he"], Scale([0.5, 0.7], axes=("x", "y")), "other_um")
    with pytest.raises(ValueError, match="anisotropic"):
        stp.pp.get_mpp(sdata, "he")


def test_mpp_survives_zarr_round_trip(tmp_path, synthetic_small):
    path = tmp_path / "s.zarr"
    small = sd.SpatialData(images={"he": synthetic_small["synthetic_full_image"]})
    small.write(path)
    assert stp.pp.get_mpp(sd.read_zarr(path), "he") == pytest.approx(0.5)
