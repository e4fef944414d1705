"""Sphinx configuration for stpredict."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

# The tutorials live in ../tutorials (stored executed); copy them next to the docs sources for myst-nb.
_HERE = Path(__file__).resolve().parent
(_HERE / "tutorials").mkdir(exist_ok=True)
for _nb in sorted((_HERE.parent / "tutorials").glob("*.ipynb")):
    shutil.copy2(_nb, _HERE / "tutorials" / _nb.name)

project = "stpredict"
author = "stpredict developers"
copyright = "2026, stpredict developers"
release = importlib.metadata.version("stpredict")
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
]
autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autosummary_imported_members = False
autoclass_content = "class"
add_module_names = False
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
nb_execution_mode = "off"  # tutorials are stored executed
# ".rst" first: autosummary writes its generated API stubs with the first suffix, and the stubs are reST (as .md
# they would be parsed as Markdown and every API page would show the raw directives; tests/test_docs.py checks).
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "spatialdata": ("https://spatialdata.scverse.org/en/stable/", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "spatialdata_io": ("https://spatialdata.scverse.org/projects/io/en/stable/", None),
}


def _online(host: str = "docs.python.org") -> bool:
    import socket

    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


# Offline builds (no network): skip the inventories instead of failing -W on unreachable hosts.
if not _online():
    intersphinx_mapping = {}
html_theme = "sphinx_book_theme"
html_title = "stpredict"
