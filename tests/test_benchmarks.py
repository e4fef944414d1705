"""The benchmark scripts run end to end (tiny settings; the real runs are in benchmarks/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

# the benchmark scripts end to end: minutes each, so behind the `slow` marker (CI runs them: `pytest -m slow`)
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> str:
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_cross_scale_script_prints_and_writes_the_table(tmp_path):
    out = tmp_path / "xs.md"
    tiny = ["--seeds", "0", "--genes", "6", "--epochs", "1", "--steps", "1", "--width-um", "480"]
    stdout = _run("cross_scale.py", *tiny, "--height-um", "416", "--max-footprints", "50", "--out", str(out))
    assert "| 2 µm bins |" in stdout and "PixNet PCC@M" in stdout
    assert out.read_text() in stdout
    df = pd.read_csv(out.with_suffix(".csv"))
    assert set(df["method"]) == {"PixNet", "SpotRegressor"} and len(df) == 10
    assert df["PCC@M"].notna().all()


def test_multiscale_script_on_a_visium_hd_outs_folder_at_equal_steps_and_time(tmp_path):
    out = tmp_path / "ms.md"
    tiny = [
        "--seeds",
        "0",
        "--genes",
        "5",
        "--epochs",
        "1",
        "--steps",
        "1",
        "--width-um",
        "480",
        "--height-um",
        "416",
    ]
    stdout = _run(
        "multiscale.py",
        *tiny,
        *(
            "--configs",
            "b16,multi_rate",
            "--max-footprints",
            "40",
            "--equal-time",
            "--visium-hd",
            "--out",
            str(out),
        ),
    )
    assert "| multi_rate | equal steps |" in stdout and "8 µm PCC@M" in stdout
    assert "io.read_visium_hd" in stdout
    df = pd.read_csv(out.with_suffix(".csv"))
    assert set(df["config"]) == {"b16", "multi_rate"}
    # the reader's bins only: no 100 µm spots on a Visium HD slide
    assert set(df["scale"]) == {"16 µm", "8 µm", "2 µm"}
    # the faster configuration trained on to the slower one's time, the slower one not
    assert (df["budget"] == "equal steps").sum() == 6 and (df["budget"] == "equal time").sum() in (0, 3)
    assert df["PCC@M"].notna().all()


def test_predict_dense_distributed_script(tmp_path):
    pytest.importorskip("distributed")
    out = tmp_path / "d.md"
    tiny = ["--size", "1024", "--workers", "1", "--bins", "16", "--chunk-size", "128"]
    stdout = _run("predict_dense_distributed.py", *tiny, "--out", str(out))
    assert "| local threads |" in stdout and "| LocalCluster 1 | 1 × 1 |" in stdout
    df = pd.read_csv(out.with_suffix(".csv"))
    assert list(df["workers"]) == [0, 1] and (df["predict_dense_s"] > 0).all()
    assert df["max_abs_diff"].max() < 1e-5  # float32 rounding: one torch thread per worker


@pytest.mark.her2st
def test_her2st_script_with_local_encoder_weights(tmp_path, her2st_dir):
    import timm
    import torch

    weights = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), weights)
    out = tmp_path / "h.md"
    args = ["--data-dir", str(her2st_dir), "--sections", "C2,C3", "--folds", "C3", "--downsample", "8"]
    args += ["--genes", "5", "--train-mpp", "8"]  # coarse pixels, one fold: a smoke test, not a benchmark
    stdout = _run(
        "her2st.py",
        *args,
        "--epochs",
        "1",
        "--steps",
        "1",
        "--encoder-weights",
        str(weights),
        "--equal-time",
        "--train-args",
        '{"ema": 0.9}',
        "--out",
        str(out),
    )
    assert f"pretrained weights: {weights}" in stdout
    assert 'SpotRegressor 1 × 1 steps with {"ema": 0.9}' in stdout
    df = pd.read_csv(out.with_suffix(".csv"))
    assert list(df["method"].unique()) == ["PixNet", "SpotRegressor", "LinearProbe"]
    # equal steps for all three, then PixNet and the SpotRegressor at equal training time
    assert list(df["budget"]) == ["equal steps"] * 3 + ["equal time"] * 2
    eq = df[df["budget"] == "equal time"]
    assert (eq["steps"] >= 1).all() and "equal time" in stdout
    assert list(df["test"].unique()) == ["C3"]
    assert df[["PCC@M", "MSE", "SSIM", "ARI_pred_vs_truth", "train_s"]].notna().all().all()
    assert "| mean | PixNet |" in out.read_text()


@pytest.mark.her2st
def test_her2st_script_with_self_supervised_encoders(tmp_path, her2st_dir):
    out = tmp_path / "h.md"
    args = ["--data-dir", str(her2st_dir), "--sections", "C2,C3", "--folds", "C3", "--downsample", "8"]
    args += ["--genes", "5", "--train-mpp", "8", "--epochs", "1", "--steps", "1"]
    ssl = ["--ssl", "train", "--ssl-epochs", "1", "--ssl-steps", "1", "--ssl-tiles", "16"]
    pixnet = ["--pixnet-args", '{"batch_size": 2, "train_mpp": 16}']
    stdout = _run("her2st.py", *args, *ssl, *pixnet, "--ssl-dir", str(tmp_path / "ssl"), "--out", str(out))
    assert 'PixNet {"batch_size": 2, "train_mpp": 16} and SpotRegressor' in stdout
    # the fold's encoders saw only the training section's image, one per pixel size the models train at
    assert (
        "[C3] SSL encoder on ['C2'] at 16 µm/px" in stdout
        and "[C3] SSL encoder on ['C2'] at 8 µm/px" in stdout
    )
    assert "SimSiam per fold and pixel size (train" in stdout
    metas = [json.loads(p.read_text()) for p in sorted((tmp_path / "ssl").glob("*C3*.pth.json"))]
    assert sorted(m["config"]["train_mpp"] for m in metas) == [8.0, 16.0]
    assert all(m["config"]["slides"] == ["C2"] for m in metas)
    df = pd.read_csv(out.with_suffix(".csv"))
    assert list(df["method"]) == ["PixNet", "SpotRegressor", "LinearProbe"] and df["PCC@M"].notna().all()


@pytest.mark.her2st
def test_her2st_ablation_script(tmp_path, her2st_dir):
    out = tmp_path / "a.csv"
    args = [
        "--data-dir",
        str(her2st_dir),
        "--downsample",
        "8",
        "--genes",
        "5",
        "--epochs",
        "1",
        "--steps",
        "1",
    ]
    stdout = _run(
        "her2st_ablation.py", *args, "--configs", "spot,pixnet_4um_small", "--flips", "--out", str(out)
    )
    df = pd.read_csv(out)
    names = ["spot", "spot+flips", "pixnet_4um_small", "pixnet_4um_small+flips"]
    assert list(df["config"]) == names and set(df["val"]) == {"C4"}
    assert df["PCC@M"].notna().all() and (df["steps"] == 1).all()
    # the flipped rows score the same trained model: same training time, other predictions
    assert df["train_s"].iloc[0] == df["train_s"].iloc[1] and df["MSE"].iloc[0] != df["MSE"].iloc[1]
    assert df["train_s"].iloc[2] == df["train_s"].iloc[3] and df["MSE"].iloc[2] != df["MSE"].iloc[3]
    assert "| pixnet_4um_small |" in stdout
    with pytest.raises(AssertionError, match="--val must not be a training section"):
        _run("her2st_ablation.py", *args, "--val", "C2", "--out", str(out))


def test_encoder_ratio_script_times_predict_dense_map_and_encoder(tmp_path):
    out = tmp_path / "er.md"
    args = ["--size", "2048", "--chunks", "256", "--genes", "5", "--repeats", "1", "--full-decoder"]
    stdout = _run("encoder_ratio.py", *args, "--bins", "16", "--out", str(out), "--workdir", str(tmp_path))
    assert "predict_dense / forward" in stdout and out.read_text() in stdout
    df = pd.read_csv(out.with_suffix(".csv"))
    assert list(df["chunk_size"]) == [256] and (df["margin"] == 64).all()
    cols = [
        "encoder_s",
        "forward_s",
        "forward_cpu_ratio",
        "predict_dense_fwd_cpu_ratio",
        "map_s",
        "map_full_decoder_s",
        "predict_dense_s",
        "map_ratio",
        "predict_dense_cpu_ratio",
    ]
    assert (df[cols] > 0).all().all()


@pytest.mark.her2st
def test_her2st_cross_scale_script_resumes_and_reports(tmp_path, her2st_dir):
    out = tmp_path / "xs.csv"
    args = ["--data-dir", str(her2st_dir), "--sections", "C2,C3", "--folds", "C3", "--downsample", "8"]
    args += [
        "--seeds",
        "0",
        "--pools",
        "3",
        "--genes",
        "5",
        "--epochs",
        "1",
        "--steps",
        "1",
        "--out",
        str(out),
    ]
    _run("her2st_cross_scale.py", *args)
    df = pd.read_csv(out)
    # every method scored on the single spots and the 2 x 2 pools; the SpotRegressor also at PixNet's time
    assert list(df.method.unique()) == ["PixNet", "SpotRegressor", "LinearProbe"]
    assert set(df.scored_on) == {"single spots", "2x2 pools"} and (df.n_genes == 5).all()
    assert set(df[df.method == "SpotRegressor"].budget) <= {"equal steps", "equal time"}
    assert (df.n_train_footprints == df.n_train_footprints.iloc[0]).all() and df["PCC@M"].notna().all()
    n = len(df)
    _run("her2st_cross_scale.py", *args)  # resumed: nothing left to do
    assert len(pd.read_csv(out)) == n
    _run("her2st_cross_scale.py", *args, "--blocks", "all", "--methods", "LinearProbe", "--tag", "t")
    df = pd.read_csv(out)
    new = df.iloc[n:]
    assert set(new.blocks) == {"all"} and set(new.tag) == {"t"}
    assert (new.n_train_footprints > df.n_train_footprints.iloc[0]).all()  # partial blocks too
    report = _run("her2st_cross_scale.py", "--report", "--out", str(out), "--data-dir", str(her2st_dir))
    assert "| 3×3 | all | t | LinearProbe |" in report and out.with_suffix(".md").is_file()
