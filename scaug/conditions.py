"""Conditions: the further attributes of a cell (donor, batch, sample) that SCLD learns beside its type.

A model fitted with ``conditions`` learns a type within a value of each attribute, or marginalised
over it. This module holds all of that bookkeeping, apart from the networks: checking what a user
gives (:func:`check_conditions`, :func:`resolve_conditions`), spreading a request over the values
(:func:`spread_request`), the codes and groups :meth:`scaug.SCLD.fit` trains on, the library-size
shift of each value, the table of training cells per (type, values) and its round trip through a
model file. It imports nothing of the model: the functions that read a fitted model take it as an
argument.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from numbers import Real

import numpy as np
import pandas as pd
import torch

from . import _utils

#: column names of :attr:`scaug.SCLD.condition_counts_` that an attribute may not take
RESERVED_CONDITION_NAMES = ("cell_type", "n_cells")


def is_missing(v) -> bool:
    """True for None, pandas' NA and NaT, and NaN."""
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    try:
        return bool(v != v)  # NaN
    except (TypeError, ValueError):
        return False


def check_conditions(conditions, n_cells: int) -> dict:
    """``{name: 1-D ndarray of n_cells values}`` from a mapping or a DataFrame, checked.

    Refuses (before any work) what :meth:`scaug.SCLD.fit` cannot learn from: names that are not
    non-empty strings or clash with :data:`RESERVED_CONDITION_NAMES`, values of another length,
    missing values, values mixing strings and numbers, and columns that are not 1-D.
    """
    if conditions is None:
        return {}
    if isinstance(conditions, pd.DataFrame):
        items = [(c, conditions[c]) for c in conditions.columns]
        if conditions.columns.duplicated().any():
            raise ValueError("conditions has duplicate column names; give each attribute one "
                             "column.")
    elif isinstance(conditions, Mapping):
        items = list(conditions.items())
    else:
        raise TypeError("conditions must be a mapping {name: one value per cell} or a pandas "
                        "DataFrame with one column per attribute (e.g. {'batch': batches} or "
                        f"adata.obs[['donor']]); got {type(conditions).__name__}.")
    out = {}
    for name, values in items:
        if not isinstance(name, str) or not name:
            raise ValueError(f"conditions names must be non-empty strings; got {name!r}.")
        if name in RESERVED_CONDITION_NAMES:
            raise ValueError(f"conditions may not be named {name!r} (reserved for "
                             "condition_counts_: the type is y, not a condition); rename it.")
        if isinstance(values, pd.Series | pd.Index | pd.Categorical):
            values = np.asarray(values.astype(object))
        else:
            values = np.asarray(values)
        if values.ndim != 1 or len(values) != n_cells:
            raise ValueError(f"conditions[{name!r}] must be 1-D with one value per cell of X "
                             f"({n_cells}); got shape {values.shape}.")
        if values.dtype.kind == "f" and np.isnan(values).any() or values.dtype == object and any(
                is_missing(v) for v in values):
            raise ValueError(f"conditions[{name!r}] has missing values (NaN/None/NA); every cell "
                             "needs a value (give the cells without one a value of their own, "
                             "e.g. 'unknown', or drop them).")
        if values.dtype == object:
            kinds = {isinstance(v, str) for v in values}
            if len(kinds) > 1:
                raise ValueError(f"conditions[{name!r}] mixes strings with other values; give "
                                 "the values of one kind, e.g. values.astype(str).")
        out[name] = values
    return out


def resolve_conditions(conditions, values: dict, n_total: int, *, per_cell: bool) -> np.ndarray:
    """Per requested cell, the code of each attribute (its null code when marginalised).

    ``conditions`` maps attribute names to a value for every cell (a scalar), or to an
    array-like with one value per requested cell (``per_cell``: only where the order of the
    cells is known); ``None`` (as the value, or an entry of the array) marginalises the
    attribute for those cells. Attributes not named are marginalised.
    """
    names = list(values)
    codes = np.array([[len(values[k]) for k in names]] * n_total, dtype=np.int64).reshape(
        n_total, len(names))
    if conditions is None:
        return codes
    if not isinstance(conditions, Mapping):
        raise TypeError("conditions must be a mapping {attribute: value or one value per "
                        f"requested cell}}; got {type(conditions).__name__}.")
    for name, given in conditions.items():
        if name not in values:
            known = names or "none: it was fitted without conditions"
            raise ValueError(f"Unknown condition {name!r}; the model knows {known}.")
        j = names.index(name)
        lookup = {_utils.plain_label(v): i for i, v in enumerate(values[name])}
        if isinstance(given, pd.Series | pd.Index | pd.Categorical):
            given = np.asarray(given.astype(object))
        if np.ndim(given) == 0:
            entries = None if is_missing(given) else [given]
        else:
            given = np.asarray(given, dtype=object)
            if not per_cell:
                raise ValueError(f"conditions[{name!r}] is an array, but the order of the cells "
                                 "is known only for a request {cell type: number}; give one "
                                 "value for every cell, or ask per type.")
            if given.ndim != 1 or len(given) != n_total:
                raise ValueError(f"conditions[{name!r}] must be one value, or one per requested "
                                 f"cell ({n_total}, in the order of the request); got shape "
                                 f"{given.shape}.")
            entries = list(given)
        if entries is None:
            continue
        column = []
        for v in entries:
            if is_missing(v):
                column.append(len(values[name]))
                continue
            key = _utils.plain_label(v)
            if key not in lookup:
                raise ValueError(f"Unknown value {v!r} of condition {name!r}; the model was "
                                 f"trained on {list(values[name])}.")
            column.append(lookup[key])
        codes[:, j] = column if len(column) == n_total else column[0]
    return codes


def spread_request(request: dict, labels, frame: pd.DataFrame, rule="proportional") -> pd.DataFrame:
    """The condition values of each cell of ``request``, spread over the values of ``frame``.

    Parameters
    ----------
    request : dict
        ``{cell type: number of cells}``; the cells come type by type, in this order.
    labels : array-like of shape (n_cells,)
        The type of each real cell.
    frame : DataFrame of shape (n_cells, n_attributes)
        The attribute values of each real cell (one column per attribute).
    rule : {"proportional", "uniform"} or callable, default="proportional"
        ``"proportional"``: a type's cells go to the combinations of values of its real cells,
        in their proportions (a type absent from a batch gets none there). ``"uniform"``:
        equally to every combination present in ``frame`` (absent ones included: SCLD warns
        about them). A callable ``rule(cell_type, counts)`` gets the type's real cells per
        combination (a Series indexed by every combination in ``frame``: values, or tuples for
        several attributes) and returns non-negative weights (a Series or dict over
        combinations).

    Returns
    -------
    DataFrame of shape (sum(request.values()), n_attributes)
        Counts are whole: largest-remainder rounding of the weights, ties to the first
        combination, so the same input gives the same spread.

    Examples
    --------
    >>> import pandas as pd
    >>> from scaug.sampling import spread_request
    >>> frame = pd.DataFrame({"batch": ["a", "a", "a", "b", "b", "b"]})
    >>> labels = ["T", "T", "T", "T", "B", "B"]
    >>> spread_request({"T": 4, "B": 2}, labels, frame)["batch"].tolist()
    ['a', 'a', 'a', 'b', 'b', 'b']
    """
    labels = np.asarray(labels, dtype=object)
    names = list(frame.columns)
    combos = pd.MultiIndex.from_frame(frame.astype(object)).unique().sort_values()
    if len(names) == 1:
        combos = pd.Index(combos.get_level_values(0), dtype=object)
    parts = []
    for label, n in request.items():
        members = frame[labels == label].astype(object)
        key = members.iloc[:, 0] if len(names) == 1 else pd.MultiIndex.from_frame(members)
        counts = pd.Series(1, index=key).groupby(level=list(range(len(names)))).sum()
        counts = counts.reindex(combos, fill_value=0)
        if rule == "proportional":
            weights = counts.astype(float)
        elif rule == "uniform":
            weights = pd.Series(1.0, index=combos)
        elif callable(rule):
            weights = pd.Series(rule(label, counts.copy()), dtype=float)
        else:
            raise ValueError(f"The spread rule must be 'proportional', 'uniform' or a callable "
                             f"(cell type, counts) -> weights; got {rule!r}.")
        if (weights < 0).any() or not np.isfinite(weights).all() or weights.sum() <= 0:
            raise ValueError(f"The spread weights for {label!r} must be finite, non-negative and "
                             f"not all 0; got {dict(weights)}.")
        share = weights.to_numpy() * int(n) / weights.sum()
        k = np.floor(share).astype(np.int64)
        rest = np.argsort(-(share - k), kind="stable")[: int(n) - int(k.sum())]
        k[rest] += 1
        for combo, m in zip(weights.index, k, strict=True):
            parts += [combo if len(names) > 1 else (combo,)] * int(m)
    return pd.DataFrame(parts if parts else np.zeros((0, len(names)), dtype=object),
                        columns=names, dtype=object)


def condition_codes(attributes: dict, n_cells: int):
    """``({name: sorted values}, codes of shape (n_cells, n_attributes))``."""
    values, columns = {}, []
    for name, column in attributes.items():
        values[name], code = np.unique(column, return_inverse=True)
        columns.append(code.astype(np.int64))
    return values, (np.column_stack(columns) if columns else np.zeros((n_cells, 0), np.int64))


def group_ids(rows: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """An id per distinct row (-1 where ``skip``): the cells of one type and one value of each
    attribute form one group."""
    _, ids = np.unique(rows, axis=0, return_inverse=True)
    return np.where(skip, -1, ids.ravel())


#: least training cells of a (type, value) pair for its own library-size shift
MIN_PAIR_CELLS = 10


def library_shifts(library, typed, attribute_codes, values, n_types) -> dict:
    """Per attribute, the shift of the log library size of each (type, value) pair.

    ``log(library) - median log(library) of the cell's type`` (cells without a type as one
    group), its median over the pair's cells, or over all the value's cells for a pair of fewer
    than :data:`MIN_PAIR_CELLS` (a batch sequenced deeper shifts every type alike, so a type
    never seen in that batch gets the batch's shift). A model without labels has one row.
    """
    log_lib = np.log(np.maximum(library, 1.0))
    resid = np.empty_like(log_lib)
    for c in np.unique(typed):
        where = typed == c
        resid[where] = log_lib[where] - np.median(log_lib[where])
    rows = typed if (typed >= 0).any() else np.zeros_like(typed)
    out = {}
    for j, (name, vals) in enumerate(values.items()):
        shifts = np.zeros((n_types, len(vals)))
        for v in range(len(vals)):
            of_value = attribute_codes[:, j] == v
            shifts[:, v] = np.median(resid[of_value])
            for c in range(n_types):
                pair = of_value & (rows == c)
                if pair.sum() >= MIN_PAIR_CELLS:
                    shifts[c, v] = np.median(resid[pair])
        out[name] = shifts
    return out


def count_table(classes, values: dict, rows, n):
    """Training cells per combination of type (-1: none) and attribute values, as a DataFrame:
    ``rows`` holds the codes of each combination (type, then attributes), ``n`` its cells."""
    rows = np.asarray(rows, dtype=np.int64).reshape(len(n), 1 + len(values))
    types = np.asarray([-1 if c < 0 else classes[c] for c in rows[:, 0]], dtype=object)
    table = {"cell_type": types}
    for j, (name, vals) in enumerate(values.items()):
        table[name] = vals[rows[:, 1 + j]]
    table["n_cells"] = n.astype(np.int64)
    return pd.DataFrame(table)


def attribute_scales(condition_scales, values: dict) -> list:
    """One guidance weight per attribute, in the model's order (1 for those not given)."""
    if condition_scales is None:
        return [1.0] * len(values)
    if not isinstance(condition_scales, Mapping):
        raise TypeError("condition_scales must be a mapping {attribute: weight >= 0}; got "
                        f"{type(condition_scales).__name__}.")
    for name, w in condition_scales.items():
        if name not in values:
            raise ValueError(f"Unknown condition {name!r} in condition_scales; the model knows "
                             f"{list(values) or 'none: it was fitted without conditions'}.")
        if isinstance(w, bool) or not isinstance(w, Real) or not np.isfinite(w) or w < 0:
            raise ValueError(f"condition_scales[{name!r}] must be a number >= 0; got {w!r}.")
    return [float(condition_scales.get(name, 1.0)) for name in values]


def condition_report(rows, values, pairs, type_row, label, unseen) -> dict:
    """``{attribute: {value: {"requested", "training_cells"}}}`` of one type's cells; the pairs
    without training cells are added to ``unseen``."""
    out = {}
    for j, (name, vals) in enumerate(values.items()):
        given, counts = np.unique(rows[:, j][rows[:, j] < len(vals)], return_counts=True)
        if len(given) == 0:
            continue  # marginalised
        out[name] = {}
        for v, m in zip(given, counts, strict=True):
            value = _utils.plain_label(vals[v])
            n_train = int(pairs[name][type_row, v])
            out[name][value] = {"requested": int(m), "training_cells": n_train}
            if n_train == 0:
                unseen.append((label, name, value, int(m)))
    return out


def conditions_frame(attribute_codes, values: dict):
    """The attribute values of each sampled cell (None where marginalised), as a DataFrame."""
    data = {}
    for j, (name, vals) in enumerate(values.items()):
        column = np.empty(len(attribute_codes), dtype=object)
        given = attribute_codes[:, j] < len(vals)
        column[given] = [_utils.plain_label(v) for v in vals[attribute_codes[given, j]]]
        data[name] = column
    return pd.DataFrame(data, index=pd.RangeIndex(len(attribute_codes)))


def to_state(model) -> dict | None:
    """The attributes, their values and training counts as plain values and tensors."""
    values = values_of(model)
    if not values:
        return None
    table = model.condition_counts_
    classes = {} if model.classes_ is None else {
        _utils.plain_label(c): i for i, c in enumerate(model.classes_)}
    codes = [[classes.get(_utils.plain_label(c), -1) for c in table["cell_type"]]]
    for name, vals in values.items():
        lookup = {_utils.plain_label(v): i for i, v in enumerate(vals)}
        codes.append([lookup[_utils.plain_label(v)] for v in table[name]])
    shifts = model.library_shifts_
    return {"names": list(values), "values": [_utils.to_plain_list(v) for v in values.values()],
            "dtypes": [str(v.dtype) for v in values.values()],
            "count_codes": torch.tensor(np.array(codes, dtype=np.int64).T.copy()),
            "n_cells": torch.from_numpy(table["n_cells"].to_numpy(dtype=np.int64).copy()),
            "library_shifts": None if not shifts else [torch.from_numpy(
                np.asarray(shifts[n], dtype=np.float64)) for n in values]}


def embedding_sizes(denoiser_state) -> list:
    """Rows of each attribute embedding of a saved denoiser's weights, in order."""
    sizes, k = [], 0
    while f"attributes.{k}.weight" in denoiser_state:
        sizes.append(int(denoiser_state[f"attributes.{k}.weight"].shape[0]))
        k += 1
    return sizes


def from_state(state, model, path, denoiser_state):
    """``(conditions_, condition_counts_, library_shifts_)`` from a saved file, checked."""
    n_classes = None if model.classes_ is None else len(model.classes_)
    if state is None:  # no conditions: one row per type, as a fit without them gives
        if embedding_sizes(denoiser_state):
            raise ValueError(f"{os.fspath(path)!r} has a denoiser with attribute embeddings but "
                             "no conditions; it was not written by SCLD.save, or was changed "
                             "since.")
        if n_classes:
            rows, n = np.arange(n_classes), np.asarray(model.class_counts_)
            if model.n_unlabelled_:  # sorted as a fit sorts them: cells without a type first
                rows, n = np.r_[-1, rows], np.r_[model.n_unlabelled_, n]
        else:
            rows, n = np.array([-1]), np.asarray(model.class_counts_)
        return {}, count_table(model.classes_, {}, rows[:, None], n), {}

    def damaged(what):
        return ValueError(f"{os.fspath(path)!r} has damaged conditions ({what}); it was not "
                          "written by SCLD.save, or was changed since.")

    names = state.get("names")
    if (not isinstance(names, list) or not names or len(set(names)) != len(names)
            or not all(isinstance(n, str) and n for n in names)
            or set(names) & set(RESERVED_CONDITION_NAMES)):
        raise damaged(f"names {names!r}")
    if len(state["values"]) != len(names) or len(state["dtypes"]) != len(names):
        raise damaged("one list of values per name")
    values = {}
    for name, vals, dtype in zip(names, state["values"], state["dtypes"], strict=True):
        arr = np.asarray(vals, dtype=object if dtype == "object" else np.dtype(dtype))
        if len(arr) == 0 or len({_utils.plain_label(v) for v in arr}) != len(arr):
            raise damaged(f"the values of {name!r}")
        values[name] = arr
    codes = state["count_codes"].numpy()
    n_cells = state["n_cells"].numpy()
    if codes.ndim != 2 or codes.shape != (len(n_cells), 1 + len(names)) or (n_cells < 1).any():
        raise damaged("the shape of the training counts")
    sizes = np.array([len(v) for v in values.values()])
    if ((codes[:, 1:] < 0) | (codes[:, 1:] >= sizes)).any() or (codes[:, 0] < -1).any() or (
            codes[:, 0] >= (n_classes or 0)).any():
        raise damaged("codes of the training counts out of range")
    weights = embedding_sizes(denoiser_state)
    if weights != [len(v) + 1 for v in values.values()]:
        raise damaged(f"the denoiser has attribute embeddings of sizes {weights}, not one more "
                      "than each attribute's number of values")
    table = count_table(model.classes_, values, codes, n_cells)
    shifts = state.get("library_shifts")
    shifts = {} if not shifts else {n: t.numpy() for n, t in zip(names, shifts, strict=True)}
    if any(shifts[n].shape != (n_classes or 1, len(values[n])) for n in shifts):
        raise damaged("the library-size shifts")
    return values, table, shifts


def values_of(model) -> dict:
    """The attributes a fitted SCLD knows, ``{name: its values}`` (``conditions_``); empty for a
    model fitted without conditions, or pickled before they existed."""
    return getattr(model, "conditions_", None) or {}

def pair_counts(model) -> dict:
    """Per attribute, training cells per (type, value): labelled types only, one row of all
    cells for a model without labels."""
    values = values_of(model)
    table = model.condition_counts_
    if model.classes_ is None:
        rows = np.zeros(len(table), dtype=np.int64)
        n_rows = 1
    else:
        lookup = {_utils.plain_label(c): i for i, c in enumerate(model.classes_)}
        # -1 (cells without a type) is never a class
        rows = np.array([lookup.get(_utils.plain_label(c), -1) for c in table["cell_type"]],
                        dtype=np.int64)
        n_rows = len(model.classes_)
    out = {}
    for name, vals in values.items():
        lookup = {_utils.plain_label(v): i for i, v in enumerate(vals)}
        cols = np.array([lookup[_utils.plain_label(v)] for v in table[name]], dtype=np.int64)
        counts = np.zeros((n_rows, len(vals)), dtype=np.int64)
        keep = rows >= 0
        np.add.at(counts, (rows[keep], cols[keep]), table["n_cells"].to_numpy()[keep])
        out[name] = counts
    return out

def class_counts_within(model, fixed: np.ndarray) -> np.ndarray:
    """Training cells of each type that have every given (non-null) attribute value."""
    values = values_of(model)
    table = model.condition_counts_
    keep = np.ones(len(table), dtype=bool)
    given = []
    for j, (name, vals) in enumerate(values.items()):
        if fixed[j] < len(vals):
            keep &= np.array([_utils.plain_label(v) == _utils.plain_label(vals[fixed[j]])
                              for v in table[name]], dtype=bool)
            given.append(f"{name}={_utils.plain_label(vals[fixed[j]])!r}")
    if model.classes_ is None:
        counts = np.array([int(table["n_cells"][keep].sum())])
    else:
        lookup = {_utils.plain_label(c): i for i, c in enumerate(model.classes_)}
        counts = np.zeros(len(model.classes_), dtype=np.int64)
        for c, m in zip(table["cell_type"][keep], table["n_cells"][keep], strict=True):
            i = lookup.get(_utils.plain_label(c))
            if i is not None:
                counts[i] += int(m)
    if given and counts.sum() == 0:
        warnings.warn(f"No labelled training cell has {', '.join(given)}; the types are drawn "
                      "in the proportions of all training cells.", UserWarning, stacklevel=4)
        return model.class_counts_
    return counts if given else model.class_counts_
