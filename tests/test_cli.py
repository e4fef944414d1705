from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import spatialdata as sd

from stpredict._cli import main


def test_demo_writes_zarr_and_prints_summary(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--width-um", "320", "--height-um", "320"]) == 0
    out = capsys.readouterr().out
    assert "synthetic_full_image" in out and "0.5000 µm/px" in out
    sdata = sd.read_zarr(tmp_path / "synthetic.zarr")
    assert "square_008um" in sdata.tables
    # refuses to overwrite unless asked
    with pytest.raises(SystemExit, match="overwrite"):
        main(["demo", "--out", str(tmp_path), "--width-um", "320", "--height-um", "320"])
    assert (
        main(["demo", "--out", str(tmp_path), "--width-um", "320", "--height-um", "320", "--overwrite"]) == 0
    )


def test_info_and_entry_point(tmp_path):
    main(["demo", "--out", str(tmp_path), "--width-um", "320", "--height-um", "320"])
    exe = shutil.which("stpredict")
    cmd = [exe] if exe else [sys.executable, "-m", "stpredict"]
    res = subprocess.run(
        [*cmd, "info", str(tmp_path / "synthetic.zarr")], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    assert "table  square_016um" in res.stdout and "µm/px" in res.stdout


def test_read_st_cli_needs_inputs():
    with pytest.raises(SystemExit, match="--section"):
        main(["read-st"])
