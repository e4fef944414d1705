"""The README's code runs as written, top to bottom (on small training budgets), and its CLI lines parse.

Python blocks are executed in order in one namespace, as a reader pasting them into a notebook would. Two things are
changed, both only to make the run short: training budgets (``max_epochs``/``steps_per_epoch`` written in the
README, and the defaults ``tl.train`` would use) become 1 epoch of 2 steps, and ``"path/to/her2st"`` becomes the
local HER2ST folder, read at a quarter of the resolution (``downsample=4``). Blocks from the first one that reads HER2ST on are skipped (with a reason) without the data.
And ``tl.train`` gets ``pretrained=False`` unless the code says otherwise, so that ``preset="auto"`` on a CUDA
machine (the paper's recipe) does not download ImageNet weights in tests.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

README = Path(__file__).resolve().parents[1] / "README.md"
HER2ST_PLACEHOLDER = '"path/to/her2st"'


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def _small(code: str) -> str:
    code = re.sub(r"max_epochs=\d+", "max_epochs=1", code)
    return re.sub(r"steps_per_epoch=\d+", "steps_per_epoch=2", code)


@pytest.fixture
def small_training(monkeypatch):
    """``tl.train`` with 1 epoch of 2 steps and no hub weights unless the code says otherwise (the probe has no epochs)."""
    import stpredict as stp

    train = stp.tl.train

    def small(*args, **kwargs):
        if kwargs.get("model", "pixnet") != "linear_probe":
            kwargs.setdefault("max_epochs", 1)
            kwargs.setdefault("steps_per_epoch", 2)
        # preset "auto" is "paper" on CUDA, which asks for hub weights: none are downloaded in tests
        if "encoder_weights" not in kwargs and isinstance(kwargs.get("model", "pixnet"), str):
            kwargs.setdefault("pretrained", False)
        return train(*args, **kwargs)

    monkeypatch.setattr(stp.tl, "train", small)
    monkeypatch.setattr(stp.settings, "progress_bar", False)  # restored afterwards


def _run(blocks: list[str], tmp_path, monkeypatch) -> dict:
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)  # anything a block writes (e.g. model.save("ckpt")) lands here
    ns: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(_small(block), f"README.md python block {i + 1}", "exec"), ns)
        except Exception as exc:
            raise AssertionError(f"README python block {i + 1} failed:\n{block}") from exc
        finally:
            plt.close("all")
    return ns


def test_readme_has_the_expected_blocks():
    blocks = _blocks("python")
    assert len(blocks) >= 3
    assert HER2ST_PLACEHOLDER not in blocks[0], "the first Python block must run without downloaded data"
    assert any(HER2ST_PLACEHOLDER in b for b in blocks)


def test_docs_quick_start_is_the_readme_one():
    """The docs landing page shows the same quick start the README runs (so it is tested too)."""
    docs = (README.parent / "docs" / "index.md").read_text()
    page = re.findall(r"^```python\n(.*?)^```", docs, flags=re.S | re.M)
    assert page and page[0] == _blocks("python")[0]


def test_readme_quick_start_runs(small_training, tmp_path, monkeypatch):
    """The blocks before the first HER2ST one: the synthetic quick start."""
    blocks = _blocks("python")
    first_her2st = next(i for i, b in enumerate(blocks) if HER2ST_PLACEHOLDER in b)
    ns = _run(blocks[:first_her2st], tmp_path, monkeypatch)
    summary = ns["summary"]
    assert {"PCC@F", "PCC@S", "PCC@M"} <= set(summary.columns)
    assert "pixnet_dense" in ns["sdata"].images


@pytest.mark.slow  # the HER2ST blocks train and predict real sections: minutes
def test_readme_runs_top_to_bottom(small_training, tmp_path, monkeypatch, request):
    """Every Python block, in order, in one namespace (needs the HER2ST sections)."""
    her2st_dir = request.getfixturevalue("her2st_dir")
    # the sections at a quarter of their resolution (the images' pixel size follows; nothing else changes)
    local = f"{str(her2st_dir)!r}, downsample=4"
    blocks = [b.replace(HER2ST_PLACEHOLDER, local) for b in _blocks("python")]
    ns = _run(blocks, tmp_path, monkeypatch)
    test = ns["test"]
    assert {"pixnet_C5_spots", "spot_regressor_C5_spots", "linear_probe_C5_spots"} <= set(test.tables)


def test_readme_command_lines_parse():
    """Every ``stpredict ...`` line of the README's bash blocks is accepted by the parser (placeholders as given)."""
    from stpredict._cli import build_parser

    parser = build_parser()
    lines = [
        line.split("#")[0].strip()
        for block in _blocks("bash")
        for line in block.splitlines()
        if line.strip().startswith("stpredict ")
    ]
    assert len(lines) >= 5
    for line in lines:
        # optional parts in brackets are kept (unbracketed); of alternatives a|b the first is taken
        argv = shlex.split(re.sub(r"\|[\w-]+", "", line).replace("[", "").replace("]", ""))[1:]
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            raise AssertionError(f"README command line does not parse: {line}") from exc


def test_demo_time_is_stated_the_same_everywhere():
    """README, docs landing page and the CLI's help give the demo's measured time in the same words."""
    from stpredict._cli import DEMO_TIME, build_parser

    stated = DEMO_TIME.split(" on ")[0]  # "about 1.5 minutes"
    assert stated in README.read_text()
    assert stated in (README.parent / "docs" / "index.md").read_text()
    demo = build_parser()._subparsers._group_actions[0].choices["demo"]
    assert stated in demo.description
