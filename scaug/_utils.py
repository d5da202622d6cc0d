"""Small torch-free helpers: seeds, input checks, labels and genes, batching, parameter constraints.

Everything here imports without torch, so that :mod:`scaug.metrics`, :mod:`scaug.datasets` and
:mod:`scaug.preprocessing` do too; the helpers that need torch (devices, CPU threads, model
files) are in :mod:`scaug._torch_utils`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from numbers import Integral

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods
from sklearn.utils._param_validation import Interval as _SklearnInterval

#: version of the saved-model format; 2: summaries instead of per-cell data, provenance
FORMAT_VERSION = 2


def seed_from(random_state) -> int:
    """Draw one integer seed from anything :func:`sklearn.utils.check_random_state` accepts."""
    if isinstance(random_state, bool | np.bool_):
        raise TypeError(f"random_state must be None, an int in [0, 2**32 - 1] or a "
                        f"numpy RandomState; got the bool {random_state!r}.")
    try:
        return int(check_random_state(random_state).randint(0, 2**31 - 1))
    except (ValueError, TypeError) as err:
        raise ValueError(f"random_state must be None, an int in [0, 2**32 - 1] or a numpy "
                         f"RandomState; got {random_state!r} ({err}).") from None


def cpu_generator(seed: int):
    """A CPU ``torch.Generator``: noise is drawn on the CPU, then moved, so CPU and GPU see the
    same noise. (torch is imported on call: this module stays importable without it.)"""
    import torch

    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    return gen


#: the largest magnitude float32 holds; scaug's networks compute in float32
FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_float32_range(values, name: str) -> None:
    """Refuse finite values that become infinite in float32 (checked in float64 they pass)."""
    if values.size and values.dtype.kind in "fiu":
        largest = float(np.max(np.abs(values)))
        if largest > FLOAT32_MAX:
            raise ValueError(
                f"{name} holds values beyond float32's range (largest magnitude {largest:.3g}, "
                f"float32 holds up to {FLOAT32_MAX:.3g}); scaug computes in float32. Expression "
                "of that size is not counts or log-expression: check how the matrix was made.")


def check_matrix(X, *, name: str = "X", min_rows: int = 1):
    """Validate a cells x genes matrix without copying or densifying it.

    Returns a 2-D numeric ndarray or CSR matrix (a CSC/COO input is converted to CSR, which is a
    re-indexing of the same values, not a densification). Refuses values that float32 cannot
    hold and a matrix without a single non-zero entry (nothing to learn from).
    """
    if isinstance(X, str | os.PathLike):
        raise TypeError(
            f"{name} is a path ({os.fspath(X)!r}); scaug's estimators take a cells x genes "
            "matrix. Read the file first (anndata.read_h5ad(path).X), or stream it from disk "
            "with scaug.OnDiskCells(path, layer=..., labels_key=...).")
    if getattr(X, "isbacked", False):
        raise TypeError(
            f"{name} is a backed AnnData (opened from disk). Stream its cells with "
            "scaug.OnDiskCells(adata.filename, layer=..., labels_key=...), or load it into "
            "memory with adata.to_memory().")
    if type(X).__name__ in ("AnnData", "AnnCollection") or hasattr(X, "obs_names"):
        raise TypeError(
            f"{name} is an AnnData; scaug's estimators take a cells x genes matrix. Use "
            "scaug.tl.fit(adata, labels_key) / scaug.tl.augment(adata, labels_key), or pass "
            "adata.X (or adata.layers[...]) with y=adata.obs[labels_key]."
        )
    if hasattr(X, "to_numpy") and not sp.issparse(X):  # pandas DataFrame
        X = X.to_numpy()
    if sp.issparse(X):
        X = X.tocsr() if X.format != "csr" else X
        values = X.data
    else:
        X = np.asarray(X)
        values = X
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D cells x genes matrix; got an array of shape {X.shape}.")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers; got dtype {X.dtype}.")
    if X.shape[0] < min_rows or X.shape[1] < 1:
        raise ValueError(
            f"{name} must have at least {min_rows} cell(s) and 1 gene; got shape {X.shape}."
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contains NaN or infinite values; scaug needs finite expression.")
    check_float32_range(values, name)
    if not np.any(values):
        raise ValueError(
            f"{name} is zero everywhere ({X.shape[0]} cells x {X.shape[1]} genes): there is no "
            "expression to learn from. Check that the right matrix or layer was passed.")
    full = not sp.issparse(X) or X.nnz == X.shape[0] * X.shape[1]
    if full and X.size > 1 and values.min() == values.max():
        raise ValueError(
            f"{name} holds the same value ({float(values.flat[0]):g}) in every entry: every cell and "
            "gene is identical, so there is nothing to learn. Check that the right matrix or "
            "layer was passed.")
    return X


def decide_likelihood(X, likelihood: str) -> str:
    """The likelihood to model ``X`` with: ``"nb"`` for counts, ``"gaussian"`` otherwise.

    ``"auto"`` refuses data that is almost counts (a few negative or non-integer entries among
    non-negative integers): one stray value would otherwise switch the whole model to continuous
    output in silence.
    """
    counts = is_count_matrix(X)
    if likelihood == "nb" and not counts:
        raise ValueError(
            "likelihood='nb' needs raw counts (non-negative integers) in X; X holds other "
            "values. Pass counts, or use likelihood='gaussian' for continuous expression.")
    if likelihood != "auto":
        return likelihood
    if counts:
        return "nb"
    values = X.data if sp.issparse(X) else X[X != 0]
    bad = (values < 0) | (values != np.floor(values))
    n_bad = int(bad.sum())
    if n_bad <= 0.01 * values.size:
        raise ValueError(
            f"X looks like counts, but {n_bad} of its {values.size} non-zero entries are negative "
            f"or not integers (for example {values[bad][0]!r}). Fix those entries to model counts, "
            "or pass likelihood='gaussian' to model X as continuous expression.")
    return "gaussian"


def is_count_matrix(X) -> bool:
    """True when every entry is a non-negative integer (raw UMI counts)."""
    values = X.data if sp.issparse(X) else X
    if values.size == 0:
        return True
    if np.issubdtype(values.dtype, np.integer):
        return bool(values.min() >= 0)
    return bool(values.min() >= 0 and np.all(values == np.floor(values)))


def row_sums(X) -> np.ndarray:
    return np.asarray(X.sum(axis=1)).ravel().astype(np.float64)


def dense_rows(X, rows) -> np.ndarray:
    """The given rows as a dense float32 block; sparse input is densified one block at a time."""
    block = X[rows]
    if sp.issparse(block):
        block = block.toarray()
    return np.asarray(block, dtype=np.float32)


def iter_batches(n: int, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, n, batch_size):
        yield np.arange(start, min(start + batch_size, n))


def resolve_feature_names(X, given_names):
    """Gene names of ``X``: its DataFrame columns, or ``given_names`` for input without them."""
    names = feature_names(X)
    if given_names is None:
        return names
    given = np.asarray(given_names, dtype=object)
    n = X.shape[1] if hasattr(X, "shape") else np.shape(X)[1]
    if given.ndim != 1 or len(given) != n or not all(isinstance(v, str) for v in given):
        raise ValueError(f"feature_names must be {n} gene names (str), one per column of X; got "
                         f"{len(given) if given.ndim == 1 else given.shape} values.")
    if len(set(given)) != len(given):
        raise ValueError("feature_names holds duplicate gene names; make them unique "
                         "(AnnData.var_names_make_unique()).")
    if names is not None and not np.array_equal(names, given):
        raise ValueError("feature_names differ from X's column names; pass one of them.")
    return given


def feature_names(X):
    """Column names of a DataFrame (or None), kept so a saved model can refuse other genes."""
    cols = getattr(X, "columns", None)
    if cols is None:
        return None
    names = np.asarray(cols, dtype=object)
    if not all(isinstance(c, str) for c in names):
        return None
    return names


class GeneSignature:
    """Stands in for a matrix in ``check_genes`` when only its shape and gene names are known."""

    def __init__(self, shape, names=None):
        self.shape = tuple(shape)
        if names is not None:
            self.columns = names


def plain_label(label):
    """A label as a plain Python object, so numpy scalars and Python values compare and hash alike."""
    return label.item() if isinstance(label, np.generic) else label


def check_labels(y, n_cells: int) -> np.ndarray:
    """One hashable label per cell, none missing; returned as a 1-D ndarray."""
    y = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    if y.ndim != 1 or len(y) != n_cells:
        raise ValueError(f"y must be 1-D with one label per cell of X ({n_cells}); got shape {y.shape}.")
    if (y.dtype.kind == "f" and np.isnan(y).any()) or (
            y.dtype == object and any(v is None or v != v for v in y)):
        raise ValueError("y contains missing labels (NaN/None); label every cell, mark the cells "
                         "without a label -1 (SCLD learns from them unlabelled), or drop them.")
    if y.dtype.kind == "f" and len(y) > 1:
        from sklearn.utils.multiclass import type_of_target

        if type_of_target(y) == "continuous":
            raise ValueError(
                f"y looks continuous ({len(np.unique(y))} distinct non-integer values among "
                f"{len(y)} cells); SCLD needs class labels (cell types). Pass the cell-type "
                "column, or integer codes.")
    return y


#: the label of an unlabelled cell, scikit-learn's semi-supervised convention
UNLABELLED = -1


def check_mask(mask, n: int, name: str) -> np.ndarray:
    """``mask`` as a boolean array of ``n`` cells, or a clear error."""
    values = np.asarray(mask)
    if values.shape != (n,) or values.dtype != bool:
        raise ValueError(f"{name} must be a boolean array with one value per cell ({n}); got "
                         f"{values.dtype} of shape {values.shape}.")
    return values


def unlabelled_mask(y: np.ndarray) -> np.ndarray:
    """True for the cells labelled with the number ``-1``; a bool is never unlabelled.

    A string ``"-1"`` is refused rather than guessed at: a type of that name, or unlabelled cells
    whose marker became a string (as in a string array)?
    """
    if y.dtype.kind in "iu":
        return y == UNLABELLED
    if y.dtype.kind == "f":
        return y == float(UNLABELLED)
    if y.dtype.kind in "OU" and any(isinstance(v, str) and v.strip() == str(UNLABELLED) for v in y):
        raise ValueError("y holds the string '-1'. Unlabelled cells are marked with the number -1 "
                         "(scikit-learn's convention), e.g. np.where(annotated, "
                         "labels.astype(object), -1); a cell type named '-1' needs another name.")
    if y.dtype == object:
        return np.fromiter((isinstance(v, Integral | np.integer | float | np.floating)
                            and not isinstance(v, bool | np.bool_) and v == UNLABELLED for v in y),
                           dtype=bool, count=len(y))
    return np.zeros(len(y), dtype=bool)


def check_genes(n_features: int, names, *, expected_n: int, expected_names, what: str) -> None:
    """Refuse data whose genes differ from those a model was trained on."""
    if n_features != expected_n:
        raise ValueError(
            f"X has {n_features} genes (columns), but {what} was trained on {expected_n} genes. "
            "Subset or reorder X to the model's genes, or fit a new model."
        )
    if names is None and expected_names is not None:
        warnings.warn(f"X has no gene names, but {what} was trained on named genes; the columns "
                      "are taken to be its genes in its order (`feature_names_in_`).",
                      UserWarning, stacklevel=3)
    if names is not None and expected_names is not None:
        names = np.asarray(names, dtype=object)
        expected_names = np.asarray(expected_names, dtype=object)
        if not np.array_equal(names, expected_names):
            bad = int(np.flatnonzero(names != expected_names)[0])
            raise ValueError(
                f"X's gene names differ from those {what} was trained on (first difference at "
                f"column {bad}: {names[bad]!r} vs {expected_names[bad]!r}). Reorder X to the "
                "model's genes (`feature_names_in_`) or fit a new model."
            )


def check_fields(state: dict, required, where: str, what: str) -> None:
    """Refuse a saved state that lacks fields a loader reads."""
    missing = [k for k in required if k not in state]
    if missing:
        raise ValueError(f"{where} is damaged: it lacks the field(s) {missing} that a saved "
                         f"{what} holds. Save the model again from the fitted object.")


class damaged_file:
    """Turn what a loader's reconstruction raises on a damaged state (a key, a shape or a type
    that does not fit) into a ValueError naming the file."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is not None and issubclass(kind, KeyError | TypeError | RuntimeError | IndexError
                                           | AttributeError):
            raise ValueError(f"{self.path!r} is damaged: {type(exc).__name__}: {exc}. Save the "
                             "model again from the fitted object.") from exc
        return False


def to_plain_list(values) -> list:
    """Labels/names as plain Python objects so that torch.load(weights_only=True) can read them."""
    return [plain_label(v) for v in np.asarray(values, dtype=object)]


class PositiveIntTuple(HasMethods):
    """A parameter constraint: a non-empty tuple or list of positive ints (hidden layer widths).

    (A subclass of one of the constraint types scikit-learn's validation accepts, so that a bad
    value gets scikit-learn's own message naming the parameter.)
    """

    def __init__(self):
        super().__init__([])

    def is_satisfied_by(self, val):
        return (isinstance(val, tuple | list) and len(val) > 0
                and all(isinstance(v, Integral) and not isinstance(v, bool) and v >= 1 for v in val))

    def __str__(self):
        return "a non-empty tuple of positive ints"


class Interval(_SklearnInterval):
    """scikit-learn's :class:`~sklearn.utils._param_validation.Interval`, refusing booleans.

    ``Interval(Integral, 1, None)`` takes ``True`` as the number 1, which is almost always a
    mistake (a flag passed where a count belongs, ``n_latent=True``). This subclass gives the
    same message ("must be an int in the range [1, inf)") for ``True`` and ``False``; every
    ``_parameter_constraints`` and ``validate_params`` of scaug uses it.
    """

    def is_satisfied_by(self, val):
        return not isinstance(val, bool | np.bool_) and super().is_satisfied_by(val)


def drop_fitted_state(estimator) -> None:
    """Remove every learned attribute (name ending in ``_``), before a fit sets new ones."""
    for key in [k for k in vars(estimator) if k.endswith("_") and not k.startswith("__")]:
        delattr(estimator, key)


def plain_params(estimator, exclude=()) -> dict:
    """Constructor parameters as plain Python values (tuples as lists), for a saved file."""
    return {k: (list(v) if isinstance(v, tuple) else v)
            for k, v in estimator.get_params(deep=False).items() if k not in exclude}


def check_sortable(y: np.ndarray) -> None:
    """Refuse labels that mix strings with numbers (numpy cannot sort them into classes)."""
    if y.dtype == object:
        kinds = {isinstance(v, str) for v in y}
        if len(kinds) > 1:
            example = next(v for v in y if not isinstance(v, str))
            raise ValueError(f"y mixes string labels with other values (for example {example!r}); "
                             "give every cell type a label of one kind, e.g. y.astype(str).")


def validate_params(estimator) -> None:
    """Check an estimator's parameters against its ``_parameter_constraints``, always.

    scikit-learn skips the check of an estimator fitted inside another's ``fit`` (its
    ``_fit_context(prefer_skip_nested_validation=True)``, which imbalanced-learn's
    ``fit_resample`` uses too), so the SCLD that an oversampler builds, or the autoencoder
    template of an SCLD, would go unchecked; the check costs microseconds, so scaug's entry
    points run it whatever that setting says.
    """
    estimator._validate_params()


def validate_against(estimator, values: dict) -> None:
    """Check per-call overrides of an estimator's parameters against its own constraints."""
    from sklearn.utils._param_validation import validate_parameter_constraints

    constraints = {k: estimator._parameter_constraints[k] for k in values}
    validate_parameter_constraints(constraints, values, caller_name=type(estimator).__name__)
