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


# -- every markdown report in docs/ is a page of the site, whichever script wrote it ---------------
# results.rst lists the reports by topic, with a title that says what each measured; a report that
# no page lists yet (a new script's) is added under "Not yet sorted" at the end of results.rst, so
# the build stays complete without anyone editing this file.
HERE = os.path.dirname(os.path.abspath(__file__))
#: pages whose toctrees list reports
LISTING_PAGES = ("results.rst", "user_guide.rst", "index.rst")


def markdown_reports():
    found = []
    for folder, dirs, files in os.walk(HERE):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")) and d not in
                         ("generated", "auto_examples"))
        rel = os.path.relpath(folder, HERE)
        found += [os.path.normpath(os.path.join(rel, f[:-3])).replace(os.sep, "/")
                  for f in sorted(files) if f.endswith(".md")]
    return found


def listed_documents():
    """Document names that a toctree of the listing pages names (``title <name>`` or ``name``)."""
    listed = set()
    for page in LISTING_PAGES:
        with open(os.path.join(HERE, page), encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        in_toctree = False
        for line in lines:
            if line.startswith(".. toctree::"):
                in_toctree = True
            elif in_toctree and line and not line.startswith(" "):
                in_toctree = False
            elif in_toctree and line.strip() and not line.strip().startswith(":"):
                entry = line.strip()
                listed.add(entry[entry.rfind("<") + 1:-1] if entry.endswith(">") else entry)
    return listed


def _add_unsorted_reports(app, docname, source):
    if docname == "results":
        unsorted = [name for name in markdown_reports() if name not in listed_documents()]
        if unsorted:
            entries = "".join(f"   {name}\n" for name in unsorted)
            source[0] += ("\nNot yet sorted\n~~~~~~~~~~~~~~\n\n"
                          f".. toctree::\n   :maxdepth: 1\n\n{entries}")


def setup(app):
    app.connect("source-read", _add_unsorted_reports)
