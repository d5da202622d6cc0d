"""Small helpers shared by the model layer: devices, seeds, input checks, batching, files."""

from __future__ import annotations

import functools
import os
import tempfile
import warnings
from collections.abc import Iterator
from numbers import Integral

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods
from sklearn.utils._param_validation import Interval as _SklearnInterval

#: version of the saved-model format; 2: summaries instead of per-cell data, provenance
FORMAT_VERSION = 2


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn a user's ``device`` argument into a :class:`torch.device`.

    ``"auto"`` picks CUDA when it is available and the CPU otherwise; ``"cpu"`` forces the CPU;
    ``"cuda"`` or ``"cuda:N"`` without a usable GPU is an error rather than a silent fallback.
    """
    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str):
        name = device.strip().lower()
    else:
        raise TypeError(
            f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device; got {device!r}."
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise ValueError(
            f"device={device!r} is not a device name; use 'auto', 'cpu', 'cuda' or 'cuda:N'."
        ) from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} asks for CUDA, but torch sees no CUDA GPU here "
                f"(torch {torch.__version__}). Use device='auto' or device='cpu'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} asks for GPU {dev.index}, but only "
                f"{torch.cuda.device_count()} CUDA device(s) are visible."
            )
    elif dev.type != "cpu":
        raise ValueError(f"device={device!r} is not supported; use 'auto', 'cpu' or 'cuda[:N]'.")
    return dev


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


def cpu_generator(seed: int) -> torch.Generator:
    """A CPU generator: noise is drawn on the CPU, then moved, so CPU and GPU see the same noise."""
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


def atomic_save(obj: dict, path, *, overwrite: bool) -> None:
    """Write ``obj`` with torch.save via a temporary file, so no half-written model is ever left."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"path={path!r} is a directory; give a file name such as 'model.pt'.")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path!r} already exists; pass overwrite=True to replace it.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"The folder {folder!r} for path={path!r} does not exist.")
    fd, tmp = tempfile.mkstemp(prefix=".scaug-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def checked_load(path, *, expected_class: str | None, required=()) -> dict:
    """Load a file written by :func:`atomic_save` and check its format version, class and that
    it holds every field in ``required`` (a damaged file names what it lacks)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No saved model at {path!r}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for files that are not its own
        raise ValueError(f"{path!r} is not a scaug model file ({type(err).__name__}: {err}).") from err
    if not isinstance(state, dict) or "format_version" not in state or "class" not in state:
        raise ValueError(f"{path!r} is not a scaug model file.")
    if expected_class is not None and state["class"] != expected_class:
        raise ValueError(
            f"{path!r} holds a {state['class']}, not a {expected_class}; load it with "
            f"scaug.{state['class']}.load."
        )
    if state["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{path!r} was written in scaug model format {state['format_version']}, but this "
            f"scaug reads format {FORMAT_VERSION}; re-fit or use the scaug version that wrote it."
        )
    check_fields(state, required, f"{path!r}", expected_class)
    return state


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


class flush_denormal:
    """Flush denormal floats to zero while training or sampling on the CPU.

    Tiny weights and Adam statistics become denormal numbers, which x86 CPUs process up to 50
    times slower; flushing them changes no result at float32 precision. torch has no getter for
    the flag, so it is restored to torch's default (off) on exit.
    """

    def __enter__(self):
        torch.set_flush_denormal(True)
        return self

    def __exit__(self, *exc):
        torch.set_flush_denormal(False)
        return False


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


def provenance(*, n_obs, n_features) -> dict:
    """Who wrote a model file, when, and from what shape of data."""
    import datetime

    from . import __version__

    return {"provenance": {
        "scaug_version": __version__, "torch_version": str(torch.__version__),
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "n_obs": None if n_obs is None else int(n_obs), "n_features": int(n_features)}}


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


def with_cpu_threads(method):
    """Run an estimator method on ``self.cpu_threads`` torch CPU threads, then restore the
    caller's setting (whatever happens inside)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        wanted = getattr(self, "cpu_threads", None)
        if wanted is None:
            return method(self, *args, **kwargs)
        previous = torch.get_num_threads()
        torch.set_num_threads(int(wanted))
        try:
            return method(self, *args, **kwargs)
        finally:
            torch.set_num_threads(previous)

    return wrapper
