from __future__ import annotations

import numpy as np
import pytest
import spatialdata as sd
from spatialdata.models import Image2DModel

import stpredict as stp
from stpredict._core import Pyramid, default_image_key


def _img(h=90, w=120, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_window_reads_are_crops_of_the_whole_read():
    """Any window equals the same pixels of the whole image read at that scale (position-absolute)."""
    img = _img()
    p = Pyramid.from_array(img)
    np.testing.assert_array_equal(p.read((0, 0, 120, 90), (90, 120)), img)  # identity: no resampling
    whole = p.read((0, 0, 120, 90), (45, 60))  # factor 2
    np.testing.assert_array_equal(p.read((20, 10, 60, 50), (20, 20)), whole[5:25, 10:30])
    expected = img.reshape(45, 2, 60, 2, 3).astype(float).mean((1, 3))
    assert np.abs(whole.astype(float) - expected).max() <= 1  # box average (uint8 rounding)
    # a non-integer factor: overlapping windows agree on their common pixels
    f = 1.5
    a = p.read((0, 0, 60 * f, 40 * f), (40, 60))
    b = p.read((12 * f, 8 * f, 52 * f, 38 * f), (30, 40))
    assert np.abs(a[9:37, 13:51].astype(int) - b[1:29, 1:39].astype(int)).max() <= 1


def test_outside_the_image_is_white_and_upsampling_is_bilinear():
    img = _img()
    p = Pyramid.from_array(img)
    w = p.read((-10, -10, 10, 10), (20, 20))
    assert (w[:10, :] == 255).all() and (w[:, :10] == 255).all()
    np.testing.assert_array_equal(w[10:, 10:], img[:10, :10])
    up = p.read((10, 10, 20, 20), (40, 40))  # 4x finer than the image: interpolated, not blocky
    nearest = np.repeat(np.repeat(img[10:20, 10:20], 4, 0), 4, 1)
    assert np.abs(up.astype(int) - nearest).mean() > 5
    assert up.min() >= img[9:21, 9:21].min() and up.max() <= img[9:21, 9:21].max()
    with pytest.raises(ValueError, match="uint8"):
        Pyramid.from_array(img.astype(np.float32))
    with pytest.raises(ValueError, match="Cannot read"):
        p.read((5, 5, 5, 9), (2, 2))


def test_coarsest_sufficient_level_is_read():
    img = _img(256, 256)
    el = Image2DModel.parse(np.moveaxis(img, -1, 0), dims=("c", "y", "x"), scale_factors=[2, 2])
    p = Pyramid.from_element(el, cache=True)
    lvl2 = np.moveaxis(np.asarray(el["scale2"]["image"]), 0, -1)
    np.testing.assert_array_equal(p.read((0, 0, 256, 256), (64, 64)), lvl2)  # read straight from scale2
    assert set(p._arrays) == {2}  # cache: only the level read was loaded
    assert p.shape == (256, 256) and [lv[1] for lv in p.levels] == [1.0, 2.0, 4.0]
    assert p.level(3.9)[1] == 2.0 and p.level(4.0)[1] == 4.0 and p.level(0.5)[1] == 1.0


def test_default_image_key_is_the_largest_rgb_image(synthetic_small):
    s = sd.SpatialData(
        images={"he": synthetic_small["synthetic_full_image"], "truth": synthetic_small["synthetic_truth"]}
    )
    assert default_image_key(s) == "he"
    with pytest.raises(ValueError, match="RGB uint8"):
        Pyramid.from_sdata(s, "truth")
    stp.pp.get_mpp(s, "he")
