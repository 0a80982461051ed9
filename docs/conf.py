"""Sphinx configuration of the finetuner-selfsup documentation.

Build (from the repository root, zero warnings expected):

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Pages are Markdown (MyST). The README, the changelog and the tutorial live outside
``docs/`` and are pulled in with MyST's ``{include}`` directive by pages placed at the
*same relative paths* as in the repository (``docs/CHANGELOG.md``,
``docs/tutorials/self-supervised-totally-looks-like/index.md``), so the README's relative
links resolve to real documents instead of needing ``suppress_warnings``.

Nothing here touches the network (no intersphinx).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Document the package of this checkout, also when it is not installed (autodoc imports it).
sys.path.insert(0, str(ROOT))

import finetuner_selfsup  # noqa: E402  (after the path set-up above)

# An installed copy's ``.pth`` file imports the package at interpreter start-up, before the
# line above can take effect; only its light ``_bootstrap`` module is loaded then. Searching
# the checkout first for submodules makes autodoc document this checkout's code anyway.
_CHECKOUT_PACKAGE = str(ROOT / "finetuner_selfsup")
if Path(finetuner_selfsup.__file__).resolve().parent != Path(_CHECKOUT_PACKAGE):
    finetuner_selfsup.__path__.insert(0, _CHECKOUT_PACKAGE)

project = "finetuner-selfsup"
author = "finetuner-selfsup contributors"
copyright = "finetuner-selfsup contributors"
release = version = finetuner_selfsup.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: anchors for headings down to level 3, so links like ``page.md#some-heading`` resolve.
myst_heading_anchors = 3

# autodoc: members in source order, signatures with their type hints.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = True

html_theme = "alabaster"
html_title = f"finetuner-selfsup {release}"
html_static_path: list = []
