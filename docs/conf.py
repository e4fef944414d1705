"""Sphinx configuration for stpredict."""

from __future__ import annotations

from importlib.metadata import version

project = "stpredict"
author = "stpredict developers"
copyright = "2026, stpredict developers"
release = version("stpredict")

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
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
nb_execution_mode = "off"  # tutorials are stored executed
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "spatialdata": ("https://spatialdata.scverse.org/en/stable/", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "spatialdata_io": ("https://spatialdata.scverse.org/projects/io/en/stable/", None),
}
# Offline builds (no network): intersphinx inventories may be unreachable; do not fail -W on that.
suppress_warnings = ["intersphinx.external", "config.cache"]
html_theme = "sphinx_book_theme"
html_title = "stpredict"
