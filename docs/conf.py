"""Sphinx configuration for the onnxloss documentation (MyST Markdown + sphinx-gallery)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))
os.environ.setdefault("MPLBACKEND", "Agg")

import onnxloss  # noqa: E402

project = "onnxloss"
author = "onnxloss developers"
copyright = "2026, onnxloss developers"  # noqa: A001 - Sphinx's name
release = version = onnxloss.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    "onnxloss_docs",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "examples/README.txt", "auto_examples/*.ipynb", "auto_examples/*.py"]
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Intersphinx needs the network; the build must work offline, so links stay local.
intersphinx_mapping: dict = {}
nitpicky = False

html_theme = "furo"
html_title = f"onnxloss {release}"
html_static_path = ["_static"]

sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "show_memory": False,
    "abort_on_example_error": True,
}
