from __future__ import annotations

import logging
import subprocess
import sys

import pytest

import stpredict as stp


def test_import_does_not_load_torch_or_timm():
    code = (
        "import sys, time; t = time.perf_counter(); import stpredict; dt = time.perf_counter() - t;"
        "heavy = [m for m in ('torch', 'timm', 'torchvision') if m in sys.modules];"
        "assert not heavy, heavy; print(f'{dt:.2f}')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    print(f"import stpredict took {res.stdout.strip()} s")


def test_namespaces_and_version():
    for ns in ("pp", "tl", "pl", "io", "datasets"):
        assert hasattr(stp, ns)
    assert stp.__version__ and stp.__version__ != "0.0.0+unknown"
    assert callable(stp.pp.get_mpp) and callable(stp.io.read_st) and callable(stp.datasets.synthetic)
    with pytest.raises(AttributeError, match="no attribute"):
        stp.does_not_exist  # noqa: B018


def test_settings_validate_and_drive_logger():
    s = stp.settings
    old = s.verbosity
    try:
        s.verbosity = 3
        assert logging.getLogger("stpredict").level == logging.DEBUG
        s.verbosity = 1
        assert logging.getLogger("stpredict").level == logging.WARNING
    finally:
        s.verbosity = old
    for attr, bad in (("verbosity", 7), ("device", "tpu"), ("seed", "x"), ("n_jobs", 0)):
        with pytest.raises(ValueError, match=attr):
            setattr(s, attr, bad)
    old_dev = s.device
    s.device = "cuda:1"
    assert s.device == "cuda:1"
    s.device = old_dev
    assert "verbosity" in repr(s)
