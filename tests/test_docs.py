"""Public docstrings document every parameter (shared fragments filled in) and the key_added convention holds."""

from __future__ import annotations

import inspect
import re

import pytest

import stpredict as stp
from stpredict import _docs

FRAGMENTS = [n for n in vars(_docs) if not n.startswith("_") and isinstance(getattr(_docs, n), str)]


def _public():
    for ns in ("pp", "tl", "pl", "io", "datasets"):
        mod = getattr(stp, ns)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if callable(obj):
                yield f"{ns}.{name}", obj
    from stpredict.model import LinearProbe, PixNet, SpotRegressor

    for cls in (PixNet, SpotRegressor, LinearProbe):
        yield cls.__name__, cls
        for meth in ("train", "predict", "predict_footprints", "predict_shapes", "save"):
            yield f"{cls.__name__}.{meth}", getattr(cls, meth)


def _documented(doc: str) -> set[str]:
    m = re.search(r"\nParameters\n-+\n(.*?)(\n\n[A-Z][a-z]+\n-+\n|\Z)", doc, re.S)
    if not m:
        return set()
    names = set()
    for line in m.group(1).splitlines():
        if line and not line.startswith(" "):
            names |= {n.strip().lstrip("*") for n in line.split(":")[0].split(",")}
    return names


@pytest.mark.parametrize(("name", "obj"), list(_public()), ids=lambda x: x if isinstance(x, str) else "")
def test_every_parameter_is_documented(name, obj):
    doc = inspect.cleandoc(obj.__doc__ or "")
    assert doc, f"{name} has no docstring"
    unfilled = [f for f in FRAGMENTS if "{" + f + "}" in doc]
    assert not unfilled, f"{name}: shared docs {unfilled} not filled in (missing @_docs.doc_params?)"
    target = obj.__init__ if inspect.isclass(obj) else obj
    params = {
        p.name
        for p in inspect.signature(target).parameters.values()
        if p.name not in ("self", "cls") and p.kind is not p.VAR_POSITIONAL
    }
    missing = params - _documented(doc)
    assert not missing, f"{name}: undocumented parameters {sorted(missing)}"


def test_key_added_convention():
    """Writers take key_added (every element named key_added or key_added_*); plots read by key."""
    writers = [stp.tl.predict_dense, stp.tl.predict_shapes, stp.tl.aggregate, stp.pp.select_tiles]
    for f in writers:
        assert "key_added" in inspect.signature(f).parameters, f.__name__
    assert "key" in inspect.signature(stp.pl.expression_map).parameters
    from stpredict._cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices
    assert "--key-added" in sub["predict"]._option_string_actions
    assert "--model" in sub["train"]._option_string_actions


def _check_build():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "check_build.py"
    spec = importlib.util.spec_from_file_location("check_build", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_api_stubs_are_rest_so_pages_render():
    """autosummary writes its stubs with the first source suffix; as .md they would show raw directives."""
    from pathlib import Path

    conf = (Path(__file__).resolve().parents[1] / "docs" / "conf.py").read_text()
    m = re.search(r"^source_suffix = \{(.*?)\}", conf, re.M | re.S)
    assert m and m.group(1).strip().startswith('".rst"'), "source_suffix must list .rst first"


def test_build_check_flags_raw_directives(tmp_path):
    """The CI check after sphinx-build fails on a page that shows directives as text, passes a rendered one."""
    gen = tmp_path / "generated"
    gen.mkdir()
    (gen / "stpredict.tl.train.html").write_text(
        "<p>.. currentmodule:: stpredict.tl</p><p>.. autofunction:: train</p>"
    )
    assert _check_build().problems(tmp_path)
    (gen / "stpredict.tl.train.html").write_text('<dl class="py function"><dt>train(sdata)</dt></dl>')
    assert _check_build().problems(tmp_path) == []
