"""The package's architecture holds: layers import downwards only, no cycles, and no torch below the model.

The layers, lowest first (``src/stpredict``):

0. ``_constants``, ``_logging``, ``_types``, ``_docs``, ``_version``, ``_paths``; 1. ``_settings``, ``_progress``; 2. ``_core`` (torch-free
building blocks); 3. ``pp``; 4. ``io``; 5. ``datasets``; 6. ``module`` (nn.Modules); 7. ``train``;
8. ``model``; 9. ``tl``; 10. ``pl``; 11. ``_cli`` / ``__main__``; the package root on top.

A module-level import may only point to a lower layer or within its own layer. An import inside a function
may also go up only where torch is loaded on demand: ``tl`` → ``model`` (``tl.train``, ``predict_*``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "stpredict"
LAYERS = {
    "_constants": 0,
    "_logging": 0,
    "_types": 0,
    "_docs": 0,
    "_version": 0,
    "_paths": 0,
    "_settings": 1,
    "_progress": 1,
    "_core": 2,
    "pp": 3,
    "io": 4,
    "datasets": 5,
    "module": 6,
    "train": 7,
    "model": 8,
    "tl": 9,
    "pl": 10,
    "_cli": 11,
    "_demo": 11,
    "_cli_checks": 11,
    "__main__": 11,
    "__init__": 12,
}
TORCH = {"torch", "timm", "torchvision"}
TORCH_FREE = {
    "_constants",
    "_paths",
    "_logging",
    "_types",
    "_docs",
    "_version",
    "_settings",
    "_progress",
    "_core",
    "pp",
    "io",
    "datasets",
    "tl",
    "pl",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(["stpredict", *parts])] = path
    return out


MODULES = _modules()


def _layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _resolve(mod: str, node: ast.ImportFrom) -> list[str]:
    """Absolute stpredict module names an ``ImportFrom`` in ``mod`` refers to."""
    is_pkg = MODULES[mod].name == "__init__.py"
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    if node.level:
        base = base[: len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("stpredict"):
        return []
    names = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
    return names or [target]


def _imports(mod: str) -> tuple[set[str], set[str], set[str]]:
    """(module-level stpredict imports, in-function stpredict imports, module-level third-party roots)."""
    tree = ast.parse(MODULES[mod].read_text())
    top, inner, third = set(), set(), set()

    def visit(node, in_function: bool, in_type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            fn = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            tc = in_type_checking or (
                isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
            )
            if isinstance(child, ast.ImportFrom) and not tc:
                targets = _resolve(mod, child)
                (inner if fn else top).update(targets)
                if not targets and child.level == 0 and not fn:
                    third.add(child.module.split(".")[0])
            elif isinstance(child, ast.Import) and not tc:
                for a in child.names:
                    if a.name.startswith("stpredict"):
                        (inner if fn else top).add(a.name)
                    elif not fn:
                        third.add(a.name.split(".")[0])
            visit(child, fn, tc)

    visit(tree, False, False)
    return top, inner, third


def test_module_level_imports_point_down_and_form_no_cycle():
    graph = {}
    for mod in MODULES:
        top, _, _ = _imports(mod)
        graph[mod] = {t for t in top if t != mod}
        src_layer = LAYERS[_layer(mod)]
        for t in graph[mod]:
            if t == "stpredict":
                pytest.fail(f"{mod} imports the package root")
            assert LAYERS[_layer(t)] <= src_layer, (
                f"{mod} (layer {_layer(mod)}) imports {t} from a higher layer"
            )
    # no cycle among files (a package's __init__ may import its own modules, not the other way round)
    state: dict[str, int] = {}

    def dfs(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt] if nxt in stack else [node, nxt]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                dfs(nxt, [*stack, nxt])
        state[node] = 2

    for mod in graph:
        if mod not in state:
            dfs(mod, [mod])


def test_upward_imports_only_at_the_torch_boundary():
    for mod in MODULES:
        _, inner, _ = _imports(mod)
        for t in inner:
            if LAYERS[_layer(t)] > LAYERS[_layer(mod)]:
                assert _layer(mod) == "tl" and _layer(t) == "model", (
                    f"{mod} imports {t} (a higher layer) in a function"
                )


def test_torch_free_layers_never_import_torch_at_module_level():
    for mod in MODULES:
        if _layer(mod) in TORCH_FREE:
            _, _, third = _imports(mod)
            assert not (third & TORCH), f"{mod} imports {third & TORCH} at module level"
            top, _, _ = _imports(mod)
            assert not {_layer(t) for t in top} & {"model", "module", "train"}, f"{mod} imports a torch layer"


def test_torch_free_calls_do_not_load_torch(tmp_path, make_st_folder):
    files = make_st_folder(tmp_path / "st")
    code = textwrap.dedent(
        f"""
        import sys
        import stpredict as stp
        s = stp.datasets.synthetic(width_um=320, height_um=288, n_genes=5, seed=0, bins_um=(16,))
        st = stp.io.read_st({str(files["counts"])!r}, {str(files["spots"])!r}, {str(files["image"])!r})
        key = "synthetic_full_image"
        stp.pp.get_mpp(s, key)
        stp.pp.select_tiles(s, tile_um=32, key_added="tiles")
        stp.pp.tissue_mask(s, key, (64, 64))
        stp.pp.tiles_mask(s, "tiles", key, (64, 64))
        s.images["truth_dense"] = s["synthetic_truth"]
        stp.tl.aggregate(s, values="truth_dense", by="synthetic_visium_spots", key_added="agg")
        t = s.tables["agg"]
        t.uns["stpredict"]["recipe"] = {{"genes": list(t.var_names), "target_sum": 1e4, "log1p": True}}
        per_gene, summary = stp.tl.evaluate(s, pred="agg", truth="visium_spots", ari=False)
        import matplotlib
        matplotlib.use("Agg")
        stp.pl.expression_map(s, t.var_names[0], key="truth")
        stp.pl.compare(s, t.var_names[0], pred="agg", truth="visium_spots")
        stp.pl.gene_scores(per_gene)
        heavy = sorted(m for m in {sorted(TORCH)!r} if m in sys.modules)
        assert not heavy, heavy
        print("ok", summary.loc["synthetic", "PCC@M"])
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().startswith("ok")
