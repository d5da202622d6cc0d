"""The bad and degenerate inputs the test suite tries, and what each one must do.

:data:`CASES` is a registry of :class:`Case`: a function, an input described in words, a call
that tries it, and the expected behaviour (:func:`raises`, :func:`warns` or :func:`returns`).
``tests/test_failure_cases.py`` runs every case and checks its outcome; ``python
docs/_scripts/failure_cases.py`` runs the same cases and renders ``docs/reliability.md``, the
table of what each one does now. Add a case here (rather than a one-off test) when a new
failure mode turns up, then re-render the table.

A call takes one argument, a fresh temporary folder (for cases that need files), and must be
quick: the whole registry runs in the test suite.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

from scaug import datasets, metrics
from scaug.exceptions import TrainingDivergedError
from scaug.metrics import DegenerateInputWarning
from scaug.preprocessing import NormalizeLog1p

# ----------------------------------------------------------------------------------------------
# the registry's vocabulary
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What a case must do: raise, warn (and return), or return quietly."""

    kind: str  # "raises", "warns" or "returns"
    category: type | None = None  # the exception or warning class
    match: str = ""  # a substring of its message
    check: Callable[[object], bool] | None = None  # a test of the returned value
    value: str = ""  # the returned value, in words

    def describe(self) -> str:
        if self.kind == "raises":
            return f"raises `{self.category.__name__}` saying {self.match!r}"
        value = f"returns {self.value}" if self.value else "returns"
        if self.kind == "warns":
            return f"{value}, warns `{self.category.__name__}` ({self.match!r})"
        return value


def raises(category, match):
    """The call raises ``category`` with ``match`` in its message."""
    return Expect("raises", category, match)


def warns(category, match, check=None, value=""):
    """The call warns ``category`` with ``match`` in its message and returns a value passing
    ``check``."""
    return Expect("warns", category, match, check, value)


def returns(check, value):
    """The call returns a value passing ``check``, with no :class:`DegenerateInputWarning`."""
    return Expect("returns", None, "", check, value)


@dataclass(frozen=True)
class Case:
    """One bad or degenerate input of one function."""

    area: str  # the module: "metrics", "datasets", "preprocessing", ...
    function: str
    case: str  # the input, in words
    call: Callable[[Path], object]
    expect: Expect

    @property
    def id(self) -> str:
        return f"{self.function}: {self.case}"


@dataclass
class Outcome:
    """What a call did: its value or exception, and the warnings it gave."""

    value: object = None
    error: BaseException | None = None
    warnings: list = field(default_factory=list)


def run(case: Case, tmp_path: Path) -> Outcome:
    """Try one case, recording its value or exception and every warning."""
    outcome = Outcome()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            outcome.value = case.call(Path(tmp_path))
        except Exception as exc:  # noqa: BLE001 - recording what the call raises is the point
            outcome.error = exc
    outcome.warnings = list(caught)
    return outcome


def problems(case: Case, outcome: Outcome) -> list[str]:
    """Why ``outcome`` is not what ``case`` expects; empty when it is."""
    expect, out = case.expect, []
    if expect.kind == "raises":
        if outcome.error is None:
            return [f"returned {outcome.value!r} instead of raising {expect.category.__name__}"]
        if not isinstance(outcome.error, expect.category):
            out.append(f"raised {type(outcome.error).__name__}, not {expect.category.__name__}")
        if expect.match not in str(outcome.error):
            out.append(f"message {str(outcome.error)!r} lacks {expect.match!r}")
        return out
    if outcome.error is not None:
        return [f"raised {type(outcome.error).__name__}: {outcome.error}"]
    if expect.check is not None and not expect.check(outcome.value):
        out.append(f"returned {outcome.value!r}, expected {expect.value}")
    degenerate = [w for w in outcome.warnings if issubclass(w.category, DegenerateInputWarning)]
    if expect.kind == "warns":
        if not any(issubclass(w.category, expect.category) and expect.match in str(w.message)
                   for w in outcome.warnings):
            found = [str(w.message) for w in outcome.warnings]
            out.append(f"no {expect.category.__name__} containing {expect.match!r} (got {found})")
    elif degenerate:
        out.append(f"warned {str(degenerate[0].message)!r}")
    return out


def describe(outcome: Outcome, *, limit: int = 220) -> str:
    """What a call did, in one line of markdown."""
    def short(text):
        text = " ".join(str(text).split()).replace("|", "\\|")
        return text if len(text) <= limit else text[: limit - 3] + "..."

    if outcome.error is not None:
        return f"raises `{type(outcome.error).__name__}`: {short(outcome.error)}"
    text = f"returns {short(_show(outcome.value))}"
    seen = []
    for w in outcome.warnings:
        if (w.category, str(w.message)) not in seen:
            seen.append((w.category, str(w.message)))
    for category, message in seen:
        text += f"; warns `{category.__name__}`: {short(message)}"
    return text


def _show(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, ad.AnnData):
        return f"an AnnData of shape {value.shape}"
    return repr(value)


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------
def _counts(n_cells, n_genes, seed=0):
    rng = np.random.default_rng(seed)
    return rng.poisson(rng.gamma(0.7, 3.0, size=n_genes), size=(n_cells, n_genes)).astype(float)


def _normal(n_cells, n_genes, seed=0):
    return np.random.default_rng(seed).normal(size=(n_cells, n_genes))


def _log(n_cells, n_genes, seed=0):
    return metrics.normalize_log1p(_counts(n_cells, n_genes, seed))


def _shared(n_cells=60, n_shared=20, n_genes=10):
    """Two samples of one population that have ``n_shared`` cells in common."""
    real, synthetic = _normal(n_cells, n_genes, 1), _normal(n_cells, n_genes, 2)
    synthetic[:n_shared] = real[:n_shared]
    return real, synthetic


def _is(value):
    return lambda v: v == value


def _near(value, tol):
    return lambda v: abs(v - value) <= tol


def _nan(v):
    return bool(np.isnan(v))


def _in_unit(v):
    return 0.0 <= v <= 1.0


def _mostly_zero_genes():
    a, b = _counts(40, 8, 1), _counts(40, 8, 2)
    pad = np.zeros((40, 24))
    return np.hstack([a, pad]), np.hstack([b, pad])


def _write(path, *, obs=None, X=True, n_cells=3):
    adata = ad.AnnData(X=sp.csr_matrix(np.ones((n_cells, 2), dtype=np.float32)) if X else None,
                       obs=None if X else ad.AnnData(np.ones((n_cells, 2))).obs)
    for key, values in (obs or {}).items():
        adata.obs[key] = values
    adata.write_h5ad(path)
    return path.parent


def _write_bytes(folder, name, data):
    (folder / name).write_bytes(data)
    return folder


def _truncated(folder, name):
    whole = _write(folder / "whole.h5ad", obs={"cell_type": ["a", "b", "a"]}) / "whole.h5ad"
    data = whole.read_bytes()
    return _write_bytes(folder, name, data[: len(data) // 2])


@contextlib.contextmanager
def _no_data_dir_env():
    saved = os.environ.pop(datasets.DATA_DIR_ENV, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[datasets.DATA_DIR_ENV] = saved


def _load_without_folder(_tmp):
    with _no_data_dir_env():
        return datasets.load("pbmc3k")


class _OnlyFit:
    def fit(self, X, y):
        return self


M, D, P = "metrics", "datasets", "preprocessing"
IPE = InvalidParameterError
DIW = DegenerateInputWarning
X60 = _normal(60, 10)

# ----------------------------------------------------------------------------------------------
# the cases
# ----------------------------------------------------------------------------------------------
CASES = [
    # c2st_auc ------------------------------------------------------------------------------
    Case(M, "c2st_auc", "a sample against an exact copy of itself (60 cells x 10 genes)",
         lambda t: metrics.c2st_auc(X60, X60.copy(), random_state=0),
         returns(_near(0.5, 1e-9), "0.5 (0.02-0.03 before issue 14)")),
    Case(M, "c2st_auc", "a sparse sample against a copy with its rows shuffled",
         lambda t: metrics.c2st_auc(sp.csr_matrix(_log(60, 30)), sp.csr_matrix(_log(60, 30)[::-1]),
                                    random_state=0),
         returns(_near(0.5, 1e-9), "0.5")),
    Case(M, "c2st_auc", "two samples of one population sharing 20 of their 60 cells",
         lambda t: metrics.c2st_auc(*_shared(), random_state=0),
         returns(_near(0.5, 0.15), "about 0.5")),
    Case(M, "c2st_auc", "a synthetic sample of one new cell repeated 60 times",
         lambda t: metrics.c2st_auc(X60, np.tile(X60[:1] + 1, (60, 1)), random_state=0),
         returns(lambda v: v > 0.95, "about 1 (the repeats are recognised)")),
    Case(M, "c2st_auc", "a synthetic sample of one real cell repeated 60 times",
         lambda t: metrics.c2st_auc(X60, np.tile(X60[:1], (60, 1)), random_state=0),
         warns(DIW, "falls back to folds that ignore copies", lambda v: v > 0.95, "about 1")),
    Case(M, "c2st_auc", "all cells of both samples identical (all zero)",
         lambda t: metrics.c2st_auc(np.zeros((12, 5)), np.zeros((12, 5)), random_state=0),
         warns(DIW, "are identical", _is(0.5), "0.5")),
    Case(M, "c2st_auc", "3 cells per sample",
         lambda t: metrics.c2st_auc(_normal(3, 5, 1), _normal(3, 5, 2), random_state=0),
         warns(DIW, "Only 3 cells per sample", _in_unit, "a value in [0, 1]")),
    Case(M, "c2st_auc", "2 cells per sample, one of them in both samples",
         lambda t: metrics.c2st_auc(np.zeros((2, 4)), np.r_[np.zeros((1, 4)), np.ones((1, 4))],
                                    random_state=0),
         warns(DIW, "fall into only 2 groups", _in_unit, "a value in [0, 1]")),
    Case(M, "c2st_auc", "classifier='knn' (10 neighbours) on 4 cells per sample",
         lambda t: metrics.c2st_auc(_normal(4, 6, 1), _normal(4, 6, 2), classifier="knn"),
         warns(DIW, "Only 4 cells", _in_unit, "a value in [0, 1]")),
    Case(M, "c2st_auc", "one cell in `real`",
         lambda t: metrics.c2st_auc(X60[:1], X60),
         raises(ValueError, "`real` must have at least 2 cells")),
    Case(M, "c2st_auc", "no cells (0 x 10)",
         lambda t: metrics.c2st_auc(X60, np.zeros((0, 10))),
         raises(ValueError, "`synthetic` must have at least 2 cells (rows); got 0")),
    Case(M, "c2st_auc", "no genes (5 x 0)",
         lambda t: metrics.c2st_auc(np.zeros((5, 0)), np.zeros((5, 0))),
         raises(ValueError, "`real` must have at least one gene")),
    Case(M, "c2st_auc", "`real` is None",
         lambda t: metrics.c2st_auc(None, X60),
         raises(IPE, "The 'real' parameter of c2st_auc")),
    Case(M, "c2st_auc", "an AnnData instead of a matrix",
         lambda t: metrics.c2st_auc(ad.AnnData(X60.astype(np.float32)), X60),
         raises(ValueError, "`real` is an AnnData; pass its matrix")),
    Case(M, "c2st_auc", "different numbers of genes",
         lambda t: metrics.c2st_auc(X60, X60[:, :9]),
         raises(ValueError, "`real` has 10 genes (columns) but `synthetic` has 9")),
    Case(M, "c2st_auc", "a NaN entry",
         lambda t: metrics.c2st_auc(X60, np.where(X60 > 2.5, np.nan, X60)),
         raises(ValueError, "`synthetic` contains")),
    Case(M, "c2st_auc", "strings",
         lambda t: metrics.c2st_auc(np.array([["a", "b"], ["c", "d"]]), np.ones((2, 2))),
         raises(ValueError, "`real` must hold numeric values")),
    Case(M, "c2st_auc", "classifier='svm'",
         lambda t: metrics.c2st_auc(X60, X60, classifier="svm"),
         raises(IPE, "The 'classifier' parameter of c2st_auc")),
    Case(M, "c2st_auc", "a classifier with neither predict_proba nor decision_function",
         lambda t: metrics.c2st_auc(X60, X60, classifier=_OnlyFit()),
         raises(IPE, "The 'classifier' parameter of c2st_auc")),
    Case(M, "c2st_auc", "cv=1",
         lambda t: metrics.c2st_auc(X60, X60, cv=1),
         raises(IPE, "The 'cv' parameter of c2st_auc")),
    Case(M, "c2st_auc", "n_components=True",
         lambda t: metrics.c2st_auc(X60, X60, n_components=True),
         raises(IPE, "The 'n_components' parameter of c2st_auc")),
    # other embedding metrics ---------------------------------------------------------------
    Case(M, "mmd_rbf", "identical samples",
         lambda t: metrics.mmd_rbf(X60, X60, random_state=0),
         returns(lambda v: -0.05 < v <= 0, "a value slightly below 0")),
    Case(M, "mmd_rbf", "bandwidths=[1, -1]",
         lambda t: metrics.mmd_rbf(X60, X60, bandwidths=[1.0, -1.0]),
         raises(ValueError, "`bandwidths` must be a non-empty sequence of positive numbers")),
    Case(M, "mmd_rbf", "bandwidths=0",
         lambda t: metrics.mmd_rbf(X60, X60, bandwidths=0),
         raises(IPE, "The 'bandwidths' parameter of mmd_rbf")),
    Case(M, "energy_distance", "identical samples",
         lambda t: metrics.energy_distance(X60, X60, random_state=0),
         returns(lambda v: -0.2 < v <= 0, "a value slightly below 0")),
    Case(M, "energy_distance", "all cells identical, dense against sparse",
         lambda t: metrics.energy_distance(np.ones((6, 3)), sp.csr_matrix(np.ones((6, 3)))),
         warns(DIW, "are identical", _is(0.0), "0")),
    Case(M, "knn_precision_recall", "identical samples",
         lambda t: metrics.knn_precision_recall(X60, X60, random_state=0),
         returns(_is((1.0, 1.0)), "(1, 1)")),
    Case(M, "knn_precision_recall", "k=25 with 20 cells",
         lambda t: metrics.knn_precision_recall(X60[:20], X60[20:40], k=25),
         raises(ValueError, "`k` (25) must be smaller than the number of real cells (20)")),
    Case(M, "pca_embed", "a `reference` whose cells are all identical",
         lambda t: metrics.pca_embed(X60, X60, reference=np.ones((5, 10))),
         raises(ValueError, "All 5 cells of `reference` are identical")),
    # gene statistics -----------------------------------------------------------------------
    Case(M, "gene_mean_correlation", "one gene",
         lambda t: metrics.gene_mean_correlation(_counts(20, 1), _counts(20, 1, 1)),
         warns(DIW, "correlation is undefined: NaN", _nan, "NaN")),
    Case(M, "gene_mean_correlation", "all-zero samples",
         lambda t: metrics.gene_mean_correlation(np.zeros((5, 4)), np.zeros((5, 4))),
         warns(DIW, "same for every gene of real and synthetic", _nan, "NaN")),
    Case(M, "gene_mean_correlation", "24 of 32 genes zero in every cell of both samples",
         lambda t: metrics.gene_mean_correlation(*_mostly_zero_genes()),
         warns(DIW, "24 of the 32 genes are zero", lambda v: -1 <= v <= 1, "the correlation")),
    Case(M, "gene_mean_correlation", "log=True on data with means below -1",
         lambda t: metrics.gene_mean_correlation(X60 - 10, X60),
         raises(ValueError, "pass log=False")),
    Case(M, "gene_variance_correlation", "a synthetic sample of one cell repeated",
         lambda t: metrics.gene_variance_correlation(_counts(20, 6), np.tile(_counts(1, 6), (20, 1))),
         warns(DIW, "variance is the same for every gene of synthetic", _nan, "NaN")),
    Case(M, "zero_fraction_error", "identical samples",
         lambda t: metrics.zero_fraction_error(_counts(20, 6), _counts(20, 6)),
         returns(_is(0.0), "0")),
    Case(M, "zero_fraction_error", "24 of 32 genes zero in every cell of both samples",
         lambda t: metrics.zero_fraction_error(*_mostly_zero_genes()),
         warns(DIW, "24 of the 32 genes are zero", _in_unit, "the error")),
    Case(M, "library_size_distance", "negative values",
         lambda t: metrics.library_size_distance(_counts(10, 4), -_counts(10, 4)),
         raises(ValueError, "`synthetic` contains negative values")),
    Case(M, "library_size_distance", "log-normalised input",
         lambda t: metrics.library_size_distance(_log(10, 4), _counts(10, 4)),
         warns(DIW, "`real` is not raw counts", lambda v: v >= 0, "a distance")),
    # memorisation --------------------------------------------------------------------------
    Case(M, "distance_to_closest_record", "a single query cell",
         lambda t: metrics.distance_to_closest_record(X60, X60[:1]),
         returns(lambda v: v.shape == (1,) and v[0] < 1e-9, "one distance, 0")),
    Case(M, "distance_to_closest_record", "one training cell",
         lambda t: metrics.distance_to_closest_record(X60[:1], X60),
         raises(ValueError, "`train` must have at least 2 cells")),
    Case(M, "dcr_ratio", "synthetic cells that copy training cells",
         lambda t: metrics.dcr_ratio(X60, X60[:20], _normal(30, 10, 5)),
         returns(_is(0.0), "0")),
    Case(M, "dcr_ratio", "held-out cells that duplicate training cells",
         lambda t: metrics.dcr_ratio(X60, _normal(30, 10, 5), X60[:30]),
         warns(DIW, "no reference distance", _nan, "NaN")),
    Case(M, "dcr_ratio", "training cells all identical",
         lambda t: metrics.dcr_ratio(np.ones((5, 10)), X60, X60),
         raises(ValueError, "All 5 cells of `train` are identical")),
    # evaluate ------------------------------------------------------------------------------
    Case(M, "evaluate", "counts=True on log-normalised data",
         lambda t: metrics.evaluate(_log(20, 8), _counts(20, 8)),
         raises(ValueError, "`real` is not raw counts")),
    Case(M, "evaluate", "counts=True with a negative count",
         lambda t: metrics.evaluate(_counts(20, 8), -_counts(20, 8)),
         raises(ValueError, "`synthetic` contains negative values")),
    Case(M, "evaluate", "counts=False on raw counts",
         lambda t: metrics.evaluate(_log(20, 8), _counts(20, 8), counts=False, random_state=0),
         warns(DIW, "`synthetic` looks like raw counts", lambda v: isinstance(v, dict), "scores")),
    Case(M, "evaluate", "2 cells per sample",
         lambda t: metrics.evaluate(_counts(2, 8), _counts(2, 8, 1), random_state=0),
         warns(DIW, "Only 2 cells per sample",
               lambda v: all(isinstance(x, float) for x in v.values()), "a dict of floats")),
    Case(M, "evaluate", "`train` cells all identical",
         lambda t: metrics.evaluate(_counts(12, 8), _counts(12, 8, 1), train=np.ones((4, 8)),
                                    random_state=0),
         warns(DIW, "dcr_ratio is NaN", lambda v: np.isnan(v["dcr_ratio"]), "dcr_ratio NaN")),
    Case(M, "evaluate", "k=0",
         lambda t: metrics.evaluate(_counts(12, 8), _counts(12, 8), k=0),
         raises(IPE, "The 'k' parameter of evaluate")),
    Case(M, "normalize_log1p", "target_sum=0",
         lambda t: metrics.normalize_log1p(_counts(4, 3), target_sum=0),
         raises(IPE, "The 'target_sum' parameter of normalize_log1p")),
    Case(M, "normalize_log1p", "negative values",
         lambda t: metrics.normalize_log1p(-_counts(4, 3)),
         raises(ValueError, "`X` contains negative values")),
    # preprocessing -------------------------------------------------------------------------
    Case(P, "NormalizeLog1p", "target_sum=-1",
         lambda t: NormalizeLog1p(target_sum=-1).fit(_counts(4, 3)),
         raises(IPE, "The 'target_sum' parameter of NormalizeLog1p")),
    Case(P, "NormalizeLog1p", "target_sum=True",
         lambda t: NormalizeLog1p(target_sum=True).fit(_counts(4, 3)),
         raises(IPE, "The 'target_sum' parameter of NormalizeLog1p")),
    Case(P, "NormalizeLog1p", "negative counts",
         lambda t: NormalizeLog1p().fit(-_counts(4, 3)),
         raises(ValueError, "Negative values in data passed to NormalizeLog1p")),
    Case(P, "NormalizeLog1p", "target_sum=None on cells that all have no counts",
         lambda t: NormalizeLog1p(target_sum=None).fit(np.zeros((3, 4))),
         raises(ValueError, "every row of X has a total of zero")),
    Case(P, "NormalizeLog1p", "transform before fit",
         lambda t: NormalizeLog1p().transform(_counts(4, 3)),
         raises(NotFittedError, "not fitted yet")),
    Case(P, "NormalizeLog1p", "transform with another number of genes",
         lambda t: NormalizeLog1p().fit(_counts(4, 3)).transform(_counts(4, 5)),
         raises(ValueError, "X has 5 features, but NormalizeLog1p is expecting 3 features")),
    Case(P, "NormalizeLog1p", "a cell with no counts",
         lambda t: NormalizeLog1p().fit_transform(np.r_[np.zeros((1, 3)), _counts(3, 3)])[0],
         returns(lambda v: np.all(v == 0), "a row of zeros, as scanpy")),
    # datasets ------------------------------------------------------------------------------
    Case(D, "load", "an unknown name ('PBMC3K')",
         lambda t: datasets.load("PBMC3K"),
         raises(IPE, "The 'name' parameter of load")),
    Case(D, "load", "data_dir=3",
         lambda t: datasets.load("cbmc", data_dir=3),
         raises(IPE, "The 'data_dir' parameter of load")),
    Case(D, "load", "no data folder given",
         _load_without_folder,
         raises(FileNotFoundError, "no data folder was given")),
    Case(D, "load", "a data folder that does not exist",
         lambda t: datasets.load("cbmc", data_dir=t / "nowhere"),
         raises(FileNotFoundError, "Cannot find the data folder")),
    Case(D, "load", "the file is missing from the folder",
         lambda t: datasets.load("cbmc", data_dir=t),
         raises(FileNotFoundError, "Cannot find the file 'cbmc.h5ad'")),
    Case(D, "load", "an empty file",
         lambda t: datasets.load("cbmc", data_dir=_write_bytes(t, "cbmc.h5ad", b"")),
         raises(ValueError, "is not a readable .h5ad file")),
    Case(D, "load", "a file that is not HDF5",
         lambda t: datasets.load("cbmc", data_dir=_write_bytes(t, "cbmc.h5ad", b"garbage" * 64)),
         raises(ValueError, "is not a readable .h5ad file")),
    Case(D, "load", "a truncated file",
         lambda t: datasets.load("paul15", data_dir=_truncated(t, "paul15.h5ad")),
         raises(ValueError, "is not a readable .h5ad file")),
    Case(D, "load", "a file without obs['cell_type']",
         lambda t: datasets.load("bladder",
                                 data_dir=_write(t / "bladder.h5ad", obs={"louvain": list("010")})),
         raises(ValueError, "has no obs['cell_type'] column")),
    Case(D, "load", "a file without X",
         lambda t: datasets.load("bladder", data_dir=_write(t / "bladder.h5ad", X=False)),
         raises(ValueError, "has no matrix in X")),
    Case(D, "load", "a file of another shape",
         lambda t: datasets.load("cbmc", data_dir=_write(t / "cbmc.h5ad", obs={"cell_type": list("aba")})),
         warns(UserWarning, "has shape (3, 2), not the (7839, 2000)",
               lambda v: v.obs["cell_type"].dtype == "category", "the AnnData, labels categorical")),
    Case(D, "simulate", "n_cells=0",
         lambda t: datasets.simulate(n_cells=0),
         raises(IPE, "The 'n_cells' parameter of simulate")),
    Case(D, "simulate", "n_types=True",
         lambda t: datasets.simulate(n_types=True),
         raises(IPE, "The 'n_types' parameter of simulate")),
    Case(D, "simulate", "rare_sizes=(0,)",
         lambda t: datasets.simulate(rare_sizes=(0,)),
         raises(ValueError, "rare_sizes[0] must be an integer >= 1")),
    Case(D, "simulate", "rare types leaving no cell for a common type",
         lambda t: datasets.simulate(n_cells=30, rare_sizes=(28,)),
         raises(ValueError, "each common type needs at least one cell")),
    Case(D, "simulate", "random_state='seed'",
         lambda t: datasets.simulate(random_state="seed"),
         raises(IPE, "The 'random_state' parameter of simulate")),
]


# ----------------------------------------------------------------------------------------------
# the model layer: SCLD, CellAutoencoder, SCLDOverSampler, scaug.tl and the command line
# ----------------------------------------------------------------------------------------------
def _tiny(**kw):
    from scaug import SCLD

    return SCLD(**{"n_latent": 2, "ae_hidden": (8,), "width": 8, "depth": 1, "max_epochs": 1,
                   "diffusion_steps": 3, "n_sample_steps": 2, "verbose": False, "device": "cpu",
                   "random_state": 0, **kw})


_FITTED = {}


def _model(kind="counts"):
    """A tiny fitted SCLD, built once: on counts, on uint8 counts, or on named genes."""
    if kind not in _FITTED:
        X, y = _counts(40, 6).astype(np.int64), np.repeat(["a", "b"], 20)
        if kind == "uint8":
            X = X.astype(np.uint8)
        names = [f"g{i}" for i in range(6)] if kind == "named" else None
        _FITTED[kind] = _tiny().fit(X, y, feature_names=names)
    return _FITTED[kind]


def _with(X, row, col, value):
    X = X.copy()
    X[row, col] = value
    return X


def _huge_libraries():
    model = _model("uint8")
    saved = model.type_summaries_.library_quantiles.copy()
    model.type_summaries_.library_quantiles[:] = np.log(1e5)
    try:
        return model.sample({"a": 3}, random_state=0)[0].dtype
    finally:
        model.type_summaries_.library_quantiles[:] = saved


def _old_format(t):
    import torch

    from scaug import SCLD

    torch.save({"format_version": 1, "class": "SCLD"}, t / "old.scld")
    return SCLD.load(t / "old.scld")


def _cli(*argv):
    import contextlib
    import io

    from scaug.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, err.getvalue().strip().count("\n") + 1


def _sampler(**kw):
    from scaug import SCLDOverSampler

    settings = {"max_epochs": 1, "n_sample_steps": 2, "device": "cpu",
                "scld_params": {"n_latent": 2, "ae_hidden": (8,), "width": 8, "depth": 1,
                                "diffusion_steps": 3}}
    return SCLDOverSampler(**{**settings, **kw})


def _damaged(t, change):
    """A saved tiny SCLD with one part of its state changed by ``change(state)``, loaded."""
    import torch

    from scaug import SCLD

    path = t / "m.scld"
    _model().save(path)
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)
    return SCLD.load(path)


def _nan_weights():
    """Sampling from a copy of a fitted model whose denoiser weights were made NaN."""
    import copy

    import torch

    model = copy.deepcopy(_model())
    with torch.no_grad():
        for p in model.denoiser_.parameters():
            p.fill_(float("nan"))
    return model.sample({"a": 3}, random_state=0)


def _generate(Z, library="ones"):
    import torch

    model = _model()
    n = np.asarray(Z).shape[0] if np.ndim(Z) else 1
    return model.autoencoder_.generate(Z, np.ones(n) if library == "ones" else library,
                                       generator=torch.Generator().manual_seed(0))


def _skipping(call):
    """``call()`` under scikit-learn's nested setting: parameter validation skipped."""
    import sklearn

    with sklearn.config_context(skip_parameter_validation=True):
        return call()


def _backed(t):
    import anndata

    path = t / "cells.h5ad"
    anndata.AnnData(XC.astype(np.float32), obs=pd.DataFrame({"cell_type": YC})).write_h5ad(path)
    return anndata.read_h5ad(path, backed="r")


S, O, A, T, C = "SCLD", "SCLDOverSampler", "CellAutoencoder", "tl", "cli"
XC, YC = _counts(40, 6), np.repeat(["a", "b"], 20)


def _ae(**kw):
    from scaug import CellAutoencoder

    return CellAutoencoder(**{"n_latent": 2, "hidden": (8,), "max_epochs": 1, "verbose": False,
                              **kw})


CASES += [
    Case(S, "SCLD.fit", "an AnnData instead of a matrix",
         lambda t: _tiny().fit(ad.AnnData(XC), YC), raises(TypeError, "scaug.tl.fit")),
    Case(S, "SCLD.fit", "counts with one negative entry",
         lambda t: _tiny().fit(_with(XC, 0, 0, -1.0), YC), raises(ValueError, "looks like counts")),
    Case(S, "SCLD.fit", "counts with one non-integer entry",
         lambda t: _tiny().fit(_with(XC, 0, 0, 0.5), YC), raises(ValueError, "looks like counts")),
    Case(S, "SCLD.fit", "labels mixing strings and integers",
         lambda t: _tiny().fit(XC, np.array(["a"] * 39 + [3], dtype=object)),
         raises(ValueError, "mixes string labels")),
    Case(S, "SCLD.fit", "every label -1",
         lambda t: _tiny().fit(XC, np.full(40, -1)), raises(ValueError, "Every label in y is -1")),
    Case(S, "SCLD.fit", "the string '-1' as a label",
         lambda t: _tiny().fit(XC, np.array(["a"] * 39 + ["-1"])),
         raises(ValueError, "holds the string '-1'")),
    Case(S, "SCLD.fit", "NaN in X",
         lambda t: _tiny().fit(_with(XC, 1, 1, np.nan), YC), raises(ValueError, "NaN")),
    Case(S, "SCLD.fit", "duplicate gene names",
         lambda t: _tiny().fit(XC, YC, feature_names=["g"] * 6), raises(ValueError, "duplicate")),
    Case(S, "SCLD.fit", "learning_rate=0",
         lambda t: _tiny(learning_rate=0.0).fit(XC, YC),
         raises(IPE, "The 'learning_rate' parameter of SCLD")),
    Case(S, "SCLD.fit", "n_latent=True",
         lambda t: _tiny(n_latent=True).fit(XC, YC), raises(IPE, "The 'n_latent' parameter of SCLD")),
    Case(S, "SCLD.fit", "ae_hidden=(0,)",
         lambda t: _tiny(ae_hidden=(0,)).fit(XC, YC), raises(IPE, "The 'ae_hidden' parameter")),
    Case(S, "SCLD.fit", "screening_quantile=0",
         lambda t: _tiny(screening_quantile=0.0).fit(XC, YC),
         raises(IPE, "The 'screening_quantile' parameter")),
    Case(S, "SCLD.fit", "screening_tolerance=-1",
         lambda t: _tiny(screening_tolerance=-1.0).fit(XC, YC),
         raises(IPE, "The 'screening_tolerance' parameter")),
    Case(S, "SCLD.fit", "trainer_kwargs setting max_epochs",
         lambda t: _tiny(trainer_kwargs={"max_epochs": 3}).fit(XC, YC),
         raises(ValueError, "trainer_kwargs may not set ['max_epochs']")),
    Case(S, "SCLD.sample", "a request of 10**9 cells",
         lambda t: _model().sample({"a": 10**9}), raises(ValueError, "more than max_cells")),
    Case(S, "SCLD.sample", "a request of 60.7 cells",
         lambda t: _model().sample({"a": 60.7}), raises(ValueError, "must be an int >= 0")),
    Case(S, "SCLD.sample", "an unknown type",
         lambda t: _model().sample({"nope": 3}), raises(ValueError, "Unknown cell type 'nope'")),
    Case(S, "SCLD.sample", "guidance_scale=-1",
         lambda t: _model().sample({"a": 3}, guidance_scale=-1.0),
         raises(IPE, "The 'guidance_scale' parameter of SCLD")),
    Case(S, "SCLD.sample", "an unfitted model",
         lambda t: _tiny().sample(3), raises(NotFittedError, "not fitted")),
    Case(S, "SCLD.sample", "uint8 counts, synthetic counts above 255",
         lambda t: _huge_libraries(),
         warns(UserWarning, "does not fit the input's dtype uint8", _is(np.dtype(np.int32)),
               "int32")),
    Case(S, "SCLD.check_genes", "an unnamed matrix for a model fitted on named genes",
         lambda t: _model("named").check_genes(XC),
         warns(UserWarning, "X has no gene names", _is(None), "None")),
    Case(S, "SCLD.check_genes", "other gene names",
         lambda t: _model("named").check_genes(pd.DataFrame(XC, columns=list("uvwxyz"))),
         raises(ValueError, "gene names differ")),
    Case(S, "SCLD.save", "a file that exists, overwrite=False",
         lambda t: _model().save(_write_bytes(t, "m.scld", b"x") / "m.scld"),
         raises(FileExistsError, "overwrite=True")),
    Case(S, "SCLD.load", "a file of model format 1",
         _old_format, raises(ValueError, "written in scaug model format 1")),
    Case(S, "SCLD.load", "a file that is not a model",
         lambda t: __import__("scaug").SCLD.load(_write_bytes(t, "x.scld", b"garbage") / "x.scld"),
         raises(ValueError, "is not a scaug model file")),
    Case(A, "CellAutoencoder.fit", "likelihood='nb' on log-normalised data",
         lambda t: _ae(likelihood="nb").fit(_log(40, 6)), raises(ValueError, "needs raw counts")),
    Case(A, "CellAutoencoder.fit", "latent_noise=NaN",
         lambda t: _ae(latent_noise=float("nan")).fit(XC),
         raises(IPE, "The 'latent_noise' parameter")),
    Case(A, "CellAutoencoder.fit", "class_balance=2",
         lambda t: _ae(class_balance=2.0).fit(XC), raises(IPE, "The 'class_balance' parameter")),
    Case(O, "SCLDOverSampler.fit_resample", "sampling_strategy asking for 60.7 cells",
         lambda t: _sampler(sampling_strategy={"a": 60.7}).fit_resample(XC, YC),
         raises(ValueError, "not whole")),
    Case(O, "SCLDOverSampler.fit_resample", "string labels mixed with -1",
         lambda t: _sampler().fit_resample(XC, np.array(["a"] * 20 + [-1] * 20, dtype=object)),
         raises(ValueError, "mixes string class labels with -1")),
    Case(O, "SCLDOverSampler.fit_resample", "an unfitted SCLD as model",
         lambda t: _sampler(model=_tiny()).fit_resample(XC, YC),
         raises(ValueError, "model is an unfitted SCLD")),
    Case(T, "tl.augment", "a labels_key that is not in obs",
         lambda t: __import__("scaug").tl.augment(ad.AnnData(XC), "cell_type"),
         raises(KeyError, "is not a column of adata.obs")),
    Case(T, "tl.augment", "a layer that does not exist",
         lambda t: __import__("scaug").tl.augment(
             ad.AnnData(XC, obs=pd.DataFrame({"cell_type": YC})), "cell_type", layer="counts"),
         raises(KeyError, "layer 'counts' is not in adata.layers")),
    Case(C, "scaug augment", "an input file that does not exist",
         lambda t: _cli("augment", str(t / "missing.h5ad"), "-o", str(t / "out.h5ad"),
                        "--labels-key", "cell_type"),
         returns(_is((2, 1)), "exit status 2, one line on stderr")),
    Case(C, "scaug sample", "a model file that does not exist",
         lambda t: _cli("sample", str(t / "missing.scld"), "--n", "a=3", "-o", str(t / "o.h5ad")),
         returns(_is((2, 1)), "exit status 2, one line on stderr")),
    Case(S, "SCLD.fit", "learning_rate=1e6 (training diverges within 5 epochs)",
         lambda t: _tiny(learning_rate=1e6, max_epochs=5, diffusion_steps=20).fit(XC, YC),
         raises(TrainingDivergedError, "stage diverged")),
    Case(S, "SCLD.fit", "an autoencoder template with latent_noise=-1",
         lambda t: _tiny(autoencoder=_ae(latent_noise=-1.0)).fit(XC, YC),
         raises(IPE, "The 'latent_noise' parameter of CellAutoencoder")),
    Case(S, "SCLD.fit", "trainer_kwargs with a key the Trainer does not take",
         lambda t: _tiny(trainer_kwargs={"gpus": 1}).fit(XC, YC),
         raises(ValueError, "not arguments of Lightning's Trainer")),
    Case(S, "SCLD.fit", "a count of 1e40 (finite in float64, inf in float32)",
         lambda t: _tiny().fit(_with(XC.astype(np.float64), 0, 0, 1e40), YC),
         raises(ValueError, "beyond float32's range")),
    Case(S, "SCLD.fit", "an all-zero matrix",
         lambda t: _tiny().fit(np.zeros((40, 6)), YC), raises(ValueError, "zero everywhere")),
    Case(S, "SCLD.fit", "a constant matrix (every entry 3)",
         lambda t: _tiny().fit(np.full((40, 6), 3.0), YC),
         raises(ValueError, "the same value (3) in every entry")),
    Case(S, "SCLD.fit", "a continuous y (40 distinct floats)",
         lambda t: _tiny().fit(XC, np.linspace(0.05, 3.95, 40)),
         raises(ValueError, "y looks continuous")),
    Case(S, "SCLD.fit", "y with a missing label (None)",
         lambda t: _tiny().fit(XC, np.r_[YC[:-1], None].astype(object)),
         raises(ValueError, "missing labels")),
    Case(S, "SCLD.fit", "a backed AnnData",
         lambda t: _tiny().fit(_backed(t), YC), raises(TypeError, "scaug.OnDiskCells")),
    Case(S, "SCLD.sample", "a model whose denoiser weights are NaN",
         lambda t: _nan_weights(), raises(ValueError, "non-finite latent")),
    Case(S, "SCLD.load", "a file without its params",
         lambda t: _damaged(t, lambda s: s.pop("params")),
         raises(ValueError, "lacks the field(s) ['params']")),
    Case(S, "SCLD.load", "a file whose autoencoder lacks its weights",
         lambda t: _damaged(t, lambda s: s["autoencoder"].pop("module")),
         raises(ValueError, "lacks the field(s) ['module'] that a saved SCLD's autoencoder")),
    Case(S, "SCLD.load", "a file whose denoiser weights are empty",
         lambda t: _damaged(t, lambda s: s.update(denoiser={})), raises(ValueError, "is damaged")),
    Case(A, "CellAutoencoder.fit", "the path of an .h5ad file instead of a matrix",
         lambda t: _ae().fit(str(t / "atlas.h5ad")), raises(TypeError, "is a path")),
    Case(A, "CellAutoencoder.fit", "learning_rate=1e6 (training diverges within 5 epochs)",
         lambda t: _ae(learning_rate=1e6, max_epochs=5).fit(XC),
         raises(TrainingDivergedError, "autoencoder stage")),
    Case(A, "CellAutoencoder.generate", "latents of the wrong width",
         lambda t: _generate(np.zeros((3, 5))), raises(ValueError, "Z must be a (cells, 2) array")),
    Case(A, "CellAutoencoder.generate", "a counts model without library",
         lambda t: _generate(np.zeros((3, 2)), library=None), raises(ValueError, "library is required")),
    Case(A, "CellAutoencoder.generate", "NaN latents",
         lambda t: _generate(np.full((3, 2), np.nan)), raises(ValueError, "NaN or infinite")),
    Case(O, "SCLDOverSampler.fit_resample", "scld_params={'n_latent': 'a'}",
         lambda t: _sampler(scld_params={"n_latent": "a"}).fit_resample(XC, YC),
         raises(IPE, "scld_params: The 'n_latent' parameter of SCLD")),
    Case(O, "SCLDOverSampler.fit_resample", "scld_params={'learning_rate': -1}",
         lambda t: _sampler(scld_params={"learning_rate": -1}).fit_resample(XC, YC),
         raises(IPE, "scld_params: The 'learning_rate' parameter of SCLD")),
    Case(O, "SCLDOverSampler.fit_resample", "scld_params={'label_dropout': 5.0}",
         lambda t: _sampler(scld_params={"label_dropout": 5.0}).fit_resample(XC, YC),
         raises(IPE, "scld_params: The 'label_dropout' parameter of SCLD")),
    Case(O, "SCLDOverSampler.fit_resample", "max_epochs=True",
         lambda t: _sampler(max_epochs=True).fit_resample(XC, YC),
         raises(IPE, "The 'max_epochs' parameter of SCLDOverSampler")),
    Case(O, "SCLDOverSampler.fit_resample", "y=None",
         lambda t: _sampler().fit_resample(XC, None), raises(ValueError, "y is None")),
    Case(O, "SCLDOverSampler.fit_resample", "a callable sampling_strategy returning a list",
         lambda t: _sampler(sampling_strategy=lambda y: [5, 5]).fit_resample(XC, YC),
         raises(TypeError, "returned a list; it must return a dict")),
    Case(O, "LatentOverSampler.fit_resample", "y=None",
         lambda t: __import__("scaug").LatentOverSampler().fit_resample(XC, None),
         raises(ValueError, "y is None")),
    Case(T, "tl.augment", "a backed AnnData",
         lambda t: __import__("scaug").tl.augment(_backed(t), "cell_type"),
         raises(ValueError, "adata is backed")),
    Case(C, "scaug demo", "--device tpu (refused before the first fold)",
         lambda t: _cli("demo", "--device", "tpu", "--quick"),
         returns(_is((2, 1)), "exit status 2, one line on stderr")),
    # found by the parameter sweep (tests/test_parameter_sweep.py)
    Case(S, "SCLD.fit", "width=1 (no room for the time embedding's sine and cosine)",
         lambda t: _tiny(width=1).fit(XC, YC), raises(IPE, "The 'width' parameter of SCLD")),
    Case(S, "SCLD.fit", "an odd width (7)",
         lambda t: _tiny(width=7).fit(XC, YC).sample({"a": 3}, random_state=0)[0].shape,
         returns(_is((3, 6)), "3 cells of 6 genes")),
    Case(S, "SCLD.fit", "max_epochs as a numpy integer, validation skipped",
         lambda t: _skipping(lambda: _tiny(max_epochs=np.int64(1)).fit(XC, YC).n_train_),
         returns(_is(40), "a model fitted on 40 cells")),
    Case(S, "SCLD.sample", "n_sample_steps beyond the model's noise levels",
         lambda t: _model().sample({"a": 3}, n_sample_steps=10**6),
         raises(ValueError, "n_sample_steps=1000000 is more than")),
    Case(S, "SCLD.sample", "random_state=-1",
         lambda t: _model().sample({"a": 3}, random_state=-1),
         raises(ValueError, "random_state must be None")),
    Case(O, "SCLDOverSampler.fit_resample", "sampling_strategy=True",
         lambda t: _sampler(sampling_strategy=True).fit_resample(XC, YC),
         raises(TypeError, "sampling_strategy=True is a bool")),
    Case(O, "SCLDOverSampler.fit_resample", "string labels with a None",
         lambda t: _sampler().fit_resample(XC, np.r_[YC[:-1], [None]].astype(object)),
         raises(ValueError, "missing labels")),
]
