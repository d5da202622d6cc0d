"""Sphinx configuration of the scaug documentation (``sphinx-build -W -b html docs OUT``)."""

import os
import sys
from importlib import metadata

sys.path.insert(0, os.path.abspath(".."))  # the checkout's scaug, installed or not

project = "scaug"
author = "scaug developers"
copyright = "scaug developers, BSD-3-Clause"
try:
    release = metadata.version("scaug")
except metadata.PackageNotFoundError:
    release = "0.0.0"
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_*", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.json", "**/*.json"]
templates_path = []

# API pages from the numpydoc docstrings
autosummary_generate = True
autodoc_default_options = {"members": False, "inherited-members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# the benchmark reports are markdown written by benchmarks/, kept unchanged: their headings start
# below the title level and they name files of the repository (scripts, JSON) that are no pages
myst_heading_anchors = 3
suppress_warnings = ["myst.header", "myst.xref_missing"]

# the gallery shows examples/ without running them: the test suite runs them
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "plot_gallery": "False",
    "filename_pattern": r"^$",
    "download_all_examples": False,
    "within_subsection_order": "FileNameSortKey",
    "remove_config_comments": True,
}

intersphinx_mapping = {}  # offline builds: no inventories fetched

html_theme = "pydata_sphinx_theme"
html_title = f"scaug {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path = []


# -- every markdown report in docs/ is a page of "Benchmarks", whichever script wrote it -----------
HERE = os.path.dirname(os.path.abspath(__file__))
#: the reports in the order the Benchmarks page lists them; any other markdown file follows
REPORT_ORDER = ["README", "fidelity_10shot", "fidelity", "downstream/downstream",
                "knn_neighbours", "sampling_speed", "oversampler_cost"]


def markdown_reports():
    found = []
    for folder, dirs, files in os.walk(HERE):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")) and d not in
                         ("generated", "auto_examples"))
        rel = os.path.relpath(folder, HERE)
        found += [os.path.normpath(os.path.join(rel, f[:-3])).replace(os.sep, "/")
                  for f in sorted(files) if f.endswith(".md")]
    known = [r for r in REPORT_ORDER if r in found]
    return known + sorted(set(found) - set(known))


def _add_reports(app, docname, source):
    if docname == "benchmarks":
        entries = "".join(f"   {name}\n" for name in markdown_reports())
        source[0] += f"\n.. toctree::\n   :maxdepth: 1\n\n{entries}"


def setup(app):
    app.connect("source-read", _add_reports)
