"""Will augmentation help my classifier? The evaluation protocol, run on a user's own data.

The same protocol as scaug's downstream benchmark (``benchmarks/downstream.py``), shipped in the
package so that it runs from an installed scaug on any labelled count matrix:

1. **Splits**: per seed, a stratified train/test split of the cells (``test_size`` held out,
   default 30 %). The chosen rare types (the ``rare`` rarest types of all labelled cells, or
   ``types``) keep at most ``cap`` training cells (a random subset); the cells a cap removes are
   used nowhere, and the held-out cells are the same with or without a cap.
2. **Samplers**: each sampler of :data:`SAMPLERS` is fitted on the training split only and raises
   every type (``sampling_strategy="auto"``, imbalanced-learn's default) or only the chosen rare
   types (``"rare"``) to the size of the largest training type. imbalanced-learn's interpolating
   samplers (SMOTE, BorderlineSMOTE, ADASYN) work on log-normalised cells with ``k_neighbors =
   min(5, smallest type to grow - 1)``; RandomOverSampler, :class:`~scaug.LatentOverSampler`,
   :class:`~scaug.SCLDOverSampler` and scVI on counts. ``LatentOverSampler`` and
   ``SCLDOverSampler`` decode through one autoencoder fitted per split (its fit counted in full in
   the time of each). A sampler that cannot run on a split (a type too small for its
   neighbours, scvi-tools missing) is skipped with its reason recorded.
3. **Scores**: every classifier sees log-normalised cells (10,000 counts per cell, ``log1p``:
   :class:`scaug.preprocessing.NormalizeLog1p`) and is scored on the held-out real cells:
   rare-type F1 (the mean F1 of the chosen types), macro-F1, balanced accuracy, the seconds of
   augmenting and of classifying, and the realism of the synthetic cells of the chosen types:
   the two-sample AUC (:func:`scaug.metrics.c2st_auc`, 0.5: indistinguishable) against the
   held-out real cells of the same type, averaged over the types that have at least
   :data:`REALISM_MIN_CELLS` held-out cells (NaN when none has).
4. **The answer**: each sampler minus no augmentation, paired over seeds (the same split for
   both), with a 95 % paired-t interval; a **win** or a **loss** only when the interval excludes
   zero (:func:`paired_interval`, the suite's rule). :func:`verdict` says which sampler to use,
   or that none helped, or that no difference was shown; :func:`report` writes it as markdown
   with two figures.

Entry points: :func:`scaug.tl.evaluate` (AnnData), :func:`evaluate` (arrays), the command
``scaug evaluate data.h5ad --labels-key cell_type``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import time
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["SAMPLERS", "CLASSIFIERS", "QUICK", "evaluate", "rare_split", "choose_types",
           "make_classifier", "paired_interval", "comparisons", "verdict", "report"]

#: name -> what the sampler is and the space it works in ("counts" or "log")
SAMPLERS = {
    "none": dict(kind="none", space="counts",
                 about="no augmentation: the baseline every sampler is compared with"),
    "RandomOverSampler": dict(kind="imblearn", space="counts",
                              about="imbalanced-learn: copies of training cells"),
    "SMOTE": dict(kind="imblearn", space="log",
                  about="imbalanced-learn: interpolation between neighbouring cells of a type"),
    "BorderlineSMOTE": dict(kind="imblearn", space="log",
                            about="imbalanced-learn: SMOTE near the borders between types"),
    "ADASYN": dict(kind="imblearn", space="log",
                   about="imbalanced-learn: SMOTE weighted toward hard-to-learn cells"),
    "LatentOverSampler": dict(kind="latent", space="counts",
                              about="scaug: a Gaussian of the type's latents, decoded"),
    "SCLDOverSampler": dict(kind="scld", space="counts",
                            about="scaug: latent diffusion conditioned on the type"),
    "scVI": dict(kind="scvi", space="counts",
                 about="scvi-tools: SCVI's posterior predictive around the type's cells"),
}
#: the samplers that model counts (they need integer counts)
COUNT_SAMPLERS = tuple(n for n, s in SAMPLERS.items() if s["kind"] in ("latent", "scld", "scvi"))
#: the built-in classifiers: name -> (constructor, settings); a seed is added where it takes one
CLASSIFIERS = {
    "xgboost": ("xgboost.XGBClassifier", dict(tree_method="hist")),
    "logreg": ("sklearn.linear_model.LogisticRegression", dict(max_iter=1000)),
    "rf": ("sklearn.ensemble.RandomForestClassifier", dict()),
    "knn": ("sklearn.neighbors.KNeighborsClassifier", dict(n_neighbors=5)),
}
#: tiny models for smoke tests and examples (``sampler_params=QUICK``): seconds, not a measurement
QUICK = {
    "autoencoder": dict(n_latent=4, hidden=(32,), max_epochs=2),
    "SCLDOverSampler": dict(max_epochs=2, n_sample_steps=5,
                            scld_params=dict(width=32, depth=1, diffusion_steps=20)),
    "scVI": dict(model=dict(n_latent=4, n_hidden=32), train=dict(max_epochs=2)),
}
#: metric columns of the frame, and whether higher is better
METRICS = {"rare_f1": True, "macro_f1": True, "balanced_accuracy": True, "realism_auc": False}
_COLUMNS = ["seed", "sampler", "status", "note", "rare_f1", "macro_f1", "balanced_accuracy",
            "realism_auc", "augment_s", "classify_s", "n_train", "n_synthetic"]
_EMBED_MAX = 200  # synthetic cells per type and sampler kept for the figure
#: held-out real cells a type needs for its realism score (fewer give a score that is mostly noise)
REALISM_MIN_CELLS = 5


# -- splits -----------------------------------------------------------------------------------------
def choose_types(y, *, rare=3, types=None):
    """The types the protocol focuses on: ``types`` as given, or the ``rare`` rarest of ``y``.

    Ties in size are broken by name. ``types`` are matched to the labels as strings.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.evaluation import choose_types
    >>> y = np.array(["a"] * 5 + ["b"] * 2 + ["c"] * 9 + ["d"] * 2)
    >>> choose_types(y, rare=2)
    ['b', 'd']
    >>> choose_types(y, types=["c"])
    ['c']
    """
    y = np.asarray(y).astype(str)
    names, counts = np.unique(y, return_counts=True)
    if types is not None:
        types = [types] if isinstance(types, str) else [str(t) for t in types]
        if not types:
            raise ValueError("types is empty; name at least one cell type, or pass types=None "
                             "and rare=N for the N rarest.")
        unknown = [t for t in types if t not in set(names)]
        if unknown:
            raise ValueError(f"unknown cell type(s) {unknown} in types; the types are "
                             f"{names.tolist()}.")
        return list(dict.fromkeys(types))
    if not isinstance(rare, Integral) or isinstance(rare, bool) or rare < 1:
        raise ValueError(f"rare must be a positive integer (the number of rarest types), got {rare!r}.")
    if rare >= len(names):
        raise ValueError(f"rare={rare} asks for the {rare} rarest of only {len(names)} types; at "
                         "least one type must stay un-chosen: pass a smaller rare, or types=[...].")
    order = np.argsort(counts, kind="stable")  # np.unique sorted the names: ties go by name
    return [str(t) for t in names[order[:rare]]]


def rare_split(y, *, seed, types, test_size=0.3, cap=None):
    """Stratified train/test indices of one seed; each type of ``types`` keeps ``cap`` training cells.

    Parameters
    ----------
    y : array-like of shape (n_cells,)
        Cell types.
    seed : int
        Seeds the split and the choice of the cells a cap keeps.
    types : list
        The chosen (rare) types, as strings.
    test_size : float, default=0.3
        Fraction of every type held out.
    cap : int or None, default=None
        Training cells kept of each chosen type (all when it has fewer); None keeps all.

    Returns
    -------
    train, test : ndarray of int
        Sorted cell indices; disjoint. The test cells do not depend on ``cap``.

    Examples
    --------
    >>> import numpy as np
    >>> from scaug.evaluation import rare_split
    >>> y = np.array(["big"] * 80 + ["rare"] * 20)
    >>> train, test = rare_split(y, seed=0, types=["rare"], cap=5)
    >>> int((y[train] == "rare").sum()), int((y[test] == "rare").sum()), len(test)
    (5, 6, 30)
    """
    from sklearn.model_selection import train_test_split

    y = np.asarray(y).astype(str)
    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=test_size, stratify=y, random_state=seed)
    if cap is not None:
        rng = np.random.default_rng(seed)
        parts = [train[~np.isin(y[train], types)]]
        for t in types:
            members = np.sort(train[y[train] == t])
            parts.append(rng.choice(members, size=min(cap, len(members)), replace=False))
        train = np.concatenate(parts)
    return np.sort(train), np.sort(test)


def target_counts(y, only=None):
    """``{type: cells after resampling}``: each type (of ``only``, if given) below the largest
    raised to the largest type's cells (imbalanced-learn's ``"auto"``)."""
    names, counts = np.unique(y, return_counts=True)
    goal = int(counts.max())
    return {t: goal for t, n in zip(names, counts, strict=True)
            if (only is None or t in only) and n < goal}


# -- statistics -------------------------------------------------------------------------------------
def paired_interval(a, b, *, higher_is_better=True, confidence=0.95):
    """Paired difference ``a - b`` over the seeds both have, with a paired-t interval.

    The benchmark suite's rule: ``verdict`` is ``"win"`` or ``"loss"`` (for ``a``) only when the
    interval excludes zero, else ``"no difference shown"``; with fewer than 2 seeds there is no
    interval (``"n/a"``).

    Parameters
    ----------
    a, b : dict
        ``{seed: score}``; NaN scores are left out.
    higher_is_better : bool, default=True
        False for scores such as the two-sample AUC, where lower is better.
    confidence : float, default=0.95

    Returns
    -------
    dict
        ``n`` (seeds), ``diff`` (mean difference), ``lo``, ``hi`` (the interval), ``verdict``.

    Examples
    --------
    >>> from scaug.evaluation import paired_interval
    >>> p = paired_interval({0: 0.8, 1: 0.7, 2: 0.9}, {0: 0.6, 1: 0.6, 2: 0.7})
    >>> round(p["diff"], 3), p["verdict"]
    (0.167, 'win')
    >>> paired_interval({0: 0.8, 1: 0.5}, {0: 0.6, 1: 0.7})["verdict"]
    'no difference shown'
    """
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return dict(n=0, diff=float("nan"), lo=float("nan"), hi=float("nan"), verdict="n/a")
    mean = float(d.mean())
    if d.size < 2:
        return dict(n=1, diff=mean, lo=float("nan"), hi=float("nan"), verdict="n/a")
    half = float(stats.t.ppf(0.5 + confidence / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size))
    lo, hi = mean - half, mean + half
    better, worse = (lo > 0, hi < 0) if higher_is_better else (hi < 0, lo > 0)
    verdict = "win" if better else "loss" if worse else "no difference shown"
    return dict(n=int(d.size), diff=mean, lo=lo, hi=hi, verdict=verdict)


def _fmt(p, digits=3):
    if p["n"] == 0:
        return ""
    if not np.isfinite(p["lo"]):
        return f"{p['diff']:+.{digits}f} (1 seed)"
    return f"{p['diff']:+.{digits}f} [{p['lo']:+.{digits}f}, {p['hi']:+.{digits}f}]"


def _by_seed(results, sampler, metric):
    got = results[(results["sampler"] == sampler) & (results["status"] == "ok")]
    return {int(s): float(v) for s, v in zip(got["seed"], got[metric], strict=True)
            if pd.notna(v)}


def comparisons(results, *, metric="rare_f1", baseline="none"):
    """Each sampler minus ``baseline``, paired over seeds: a DataFrame, one row per sampler.

    Columns: ``sampler``, ``mean`` (of ``metric`` over its seeds), ``baseline_mean``, ``n``,
    ``diff``, ``lo``, ``hi`` (the 95 % paired-t interval), ``verdict`` (``"win"``, ``"loss"``,
    ``"no difference shown"`` or ``"n/a"``; for ``realism_auc`` lower is better), ``augment_s``
    (mean seconds) and ``status`` (``"ok"``, or why it has no scores).

    Examples
    --------
    >>> import pandas as pd
    >>> from scaug.evaluation import comparisons
    >>> frame = pd.DataFrame({"seed": [0, 1, 2] * 2, "sampler": ["none"] * 3 + ["SMOTE"] * 3,
    ...                       "status": "ok", "rare_f1": [0.5, 0.6, 0.4, 0.7, 0.8, 0.6],
    ...                       "augment_s": [0.0] * 3 + [0.1] * 3})
    >>> comparisons(frame)[["sampler", "diff", "verdict"]].round(3)
      sampler  diff verdict
    0   SMOTE   0.2     win
    """
    rows = []
    base = _by_seed(results, baseline, metric)
    for name in dict.fromkeys(results["sampler"]):
        if name == baseline:
            continue
        mine = _by_seed(results, name, metric)
        got = results[results["sampler"] == name]
        status = "ok" if mine else "; ".join(dict.fromkeys(
            f"{s}: {n}" for s, n in zip(got["status"], got.get("note", got["status"]), strict=True)
            if s != "ok"))
        p = paired_interval(mine, base, higher_is_better=METRICS.get(metric, True))
        rows.append(dict(sampler=name, mean=np.mean(list(mine.values())) if mine else np.nan,
                         baseline_mean=np.mean(list(base.values())) if base else np.nan, **p,
                         augment_s=float(got["augment_s"].mean()) if "augment_s" in got else np.nan,
                         status=status))
    return pd.DataFrame(rows, columns=["sampler", "mean", "baseline_mean", "n", "diff", "lo", "hi",
                                       "verdict", "augment_s", "status"])


def verdict(results, *, metric="rare_f1", baseline="none"):
    """The answer: which sampler to use for this classifier and data, if any.

    A sampler is recommended only when its paired interval against no augmentation excludes
    zero in its favour (a **win**). Among several winners the one with the largest mean gain is
    named, and the cheaper winners that it does not beat (their paired interval includes zero)
    are named as equally good choices.

    Returns
    -------
    dict
        ``answer``: ``"use"``, ``"none of them"`` (no win, at least one loss), ``"no difference
        shown"`` (no win, no loss) or ``"n/a"`` (fewer than 2 seeds); ``sampler``: the sampler
        to use (None unless ``answer == "use"``); ``text``: the answer in a few sentences;
        ``comparisons``: the table of :func:`comparisons`.

    Examples
    --------
    >>> import pandas as pd
    >>> from scaug.evaluation import verdict
    >>> frame = pd.DataFrame({"seed": [0, 1, 2] * 3, "status": "ok",
    ...                       "sampler": ["none"] * 3 + ["SMOTE"] * 3 + ["SCLDOverSampler"] * 3,
    ...                       "rare_f1": [0.5, 0.6, 0.4, 0.7, 0.8, 0.6, 0.5, 0.7, 0.3],
    ...                       "augment_s": [0.0] * 3 + [0.1] * 3 + [60.0] * 3})
    >>> v = verdict(frame)
    >>> v["answer"], v["sampler"]
    ('use', 'SMOTE')
    """
    comps = comparisons(results, metric=metric, baseline=baseline)
    what = {"rare_f1": "rare-type F1", "macro_f1": "macro-F1",
            "balanced_accuracy": "balanced accuracy", "realism_auc": "two-sample AUC"}.get(metric, metric)
    n_seeds = int(results.loc[results["sampler"] == baseline, "seed"].nunique())
    ok = comps[comps["n"] > 0]
    out = dict(answer="n/a", sampler=None, comparisons=comps)
    if ok.empty or (ok["verdict"] == "n/a").all():
        out["text"] = (f"No answer: with {n_seeds} seed(s) there is no interval. Run at least 2 "
                       "seeds (5 give a useful interval).")
        return out
    wins = ok[ok["verdict"] == "win"].sort_values("diff", ascending=False)
    losses = ok[ok["verdict"] == "loss"]
    if not wins.empty:
        best = wins.iloc[0]
        out.update(answer="use", sampler=str(best["sampler"]))
        text = (f"Use **{best['sampler']}**: {what} {best['mean']:.3f} against {best['baseline_mean']:.3f} "
                f"without augmentation, a gain of {_fmt(best)} (95 % interval over {int(best['n'])} "
                "paired seeds, which excludes zero).")
        base_best = _by_seed(results, best["sampler"], metric)
        tied = []
        for _, other in wins.iloc[1:].iterrows():
            p = paired_interval(base_best, _by_seed(results, other["sampler"], metric),
                                higher_is_better=METRICS.get(metric, True))
            if p["verdict"] != "win":
                tied.append(f"{other['sampler']} ({_fmt(other)}, {other['augment_s']:.1f} s against "
                            f"{best['augment_s']:.1f} s)")
        if tied:
            text += (" Also a win, and not shown worse than it: " + "; ".join(tied)
                     + ". Prefer the cheaper one if time matters.")
        if metric != "macro_f1" and "macro_f1" in results:
            p = paired_interval(_by_seed(results, best["sampler"], "macro_f1"),
                                _by_seed(results, baseline, "macro_f1"))
            if p["verdict"] == "loss":
                text += (f" But it lowers macro-F1 ({_fmt(p)}): the rare types gain at the others' "
                         "expense.")
    elif not losses.empty:
        out["answer"] = "none of them"
        text = (f"None of them: no sampler raised {what} over no augmentation (no interval "
                "excludes zero in its favour), and " + ", ".join(
                    f"{r['sampler']} ({_fmt(r)})" for _, r in losses.iterrows())
                + " lowered it. Train the classifier on the real cells.")
    else:
        out["answer"] = "no difference shown"
        text = (f"No difference shown: with {n_seeds} seeds, no sampler's interval for {what} "
                "against no augmentation excludes zero. Augmentation costs time here for no shown "
                "gain; more seeds (seeds=10) narrow the intervals.")
    out["text"] = text
    return out


# -- classifiers ------------------------------------------------------------------------------------
def _load_classifier_file(path):
    if not os.path.isfile(path):
        raise ValueError(f"classifier {path!r} ends in .py but is not a file; give the path of a "
                         "Python file defining make_classifier(random_state), or one of "
                         f"{list(CLASSIFIERS)}.")
    spec = importlib.util.spec_from_file_location("_scaug_user_classifier", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    factory = getattr(module, "make_classifier", None)
    if factory is None:
        factory = getattr(module, "classifier", None)
    if factory is None:
        raise ValueError(f"{path} defines neither make_classifier(random_state) nor a "
                         "`classifier` estimator; define one of them.")
    return factory


def _resolve_classifier(classifier):
    """A factory ``seed -> unfitted classifier`` for a name, a PATH.py, an estimator or a callable."""
    from sklearn.base import clone

    if isinstance(classifier, str | os.PathLike) and str(classifier).endswith(".py"):
        classifier = _load_classifier_file(os.fspath(classifier))
    elif isinstance(classifier, str):
        if classifier not in CLASSIFIERS:
            raise ValueError(f"unknown classifier {classifier!r}; pass one of {list(CLASSIFIERS)}, "
                             "the path of a .py file defining make_classifier(random_state), or "
                             "a scikit-learn classifier.")
        if classifier == "xgboost" and importlib.util.find_spec("xgboost") is None:
            raise ValueError("classifier 'xgboost' needs XGBoost: pip install 'scaug[xgboost]', or "
                             "pass classifier='logreg', 'rf' or 'knn'.")
        name = classifier
        return lambda seed, n_jobs=1: make_classifier(name, seed, n_jobs=n_jobs)
    if hasattr(classifier, "fit") and hasattr(classifier, "predict"):
        est = classifier

        def cloned(seed, n_jobs=1):
            new = clone(est)
            if "random_state" in new.get_params():
                new.set_params(random_state=seed)
            return new
        return cloned
    if callable(classifier):
        factory = classifier
        takes_seed = bool(inspect.signature(factory).parameters)

        def made(seed, n_jobs=1):
            return factory(seed) if takes_seed else factory()
        return made
    raise ValueError(f"classifier must be one of {list(CLASSIFIERS)}, a path to a .py file, a "
                     f"scikit-learn classifier or a callable; got {classifier!r}.")


def make_classifier(name, random_state=0, *, n_jobs=1):
    """A new built-in classifier: ``"xgboost"``, ``"logreg"``, ``"rf"`` or ``"knn"``.

    XGBoost uses the ``hist`` method, logistic regression 1000 iterations, k-NN 5 neighbours;
    the others their library's defaults. Labels are encoded ``0 .. K-1`` by the protocol.

    Examples
    --------
    >>> from scaug.evaluation import make_classifier
    >>> make_classifier("knn")
    KNeighborsClassifier()
    """
    path, params = CLASSIFIERS[name]
    module, cls = path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), cls)
    params = dict(params)
    if name in ("xgboost", "rf"):
        params.update(random_state=random_state, n_jobs=n_jobs)
    return cls(**params)


# -- checks before any work ----------------------------------------------------------------------
def _scvi_installed():
    """True when scvi-tools imports (a folder named ``scvi`` on the path is not enough)."""
    if importlib.util.find_spec("scvi") is None:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scvi = importlib.import_module("scvi")
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return False
    return hasattr(scvi, "model") and hasattr(scvi, "settings")


def _resolve_samplers(samplers, notes):
    scvi_here = _scvi_installed()
    if samplers is None:
        names = [n for n in SAMPLERS if n != "scVI" or scvi_here]
        if not scvi_here:
            notes.append("scVI was left out: scvi-tools is not installed (pip install scvi-tools "
                         "to include it).")
        return names
    names = [samplers] if isinstance(samplers, str) else list(samplers)
    unknown = [n for n in names if n not in SAMPLERS]
    if unknown:
        raise ValueError(f"unknown sampler(s) {unknown} in samplers; they are {list(SAMPLERS)}.")
    if "scVI" in names and not scvi_here:
        raise ValueError("samplers asks for 'scVI' but scvi-tools is not installed: pip install "
                         "scvi-tools, or leave 'scVI' out of samplers.")
    if "none" not in names:
        names = ["none", *names]  # the baseline of every comparison
    return list(dict.fromkeys(names))


def _check_sampler_params(sampler_params, names):
    params = dict(sampler_params or {})
    allowed = set(SAMPLERS) | {"autoencoder"}
    unknown = [k for k in params if k not in allowed]
    if unknown:
        raise ValueError(f"sampler_params has unknown key(s) {unknown}; the keys are sampler names "
                         f"{list(SAMPLERS)} and 'autoencoder' (the shared CellAutoencoder).")
    return params


def _check_data(X, y, names):
    from ._utils import is_count_matrix

    if X.shape[0] != len(y):
        raise ValueError(f"X has {X.shape[0]} cells but y has {len(y)} labels.")
    if len(np.unique(y)) < 2:
        raise ValueError(f"the labels hold only one class ({np.unique(y).tolist()}); a classifier "
                         "needs at least two cell types.")
    if not is_count_matrix(X):
        counting = [n for n in names if n in COUNT_SAMPLERS]
        if counting:
            raise ValueError(f"the samplers {counting} model counts, and the matrix read holds "
                             "non-integer or negative values (log-normalised or scaled data?); pass "
                             "layer= naming the raw counts layer (e.g. layer='counts').")
        raise ValueError("the protocol log-normalises counts for the classifier, and the matrix "
                         "read holds non-integer or negative values (log-normalised or scaled "
                         "data?); pass layer= naming the raw counts layer (e.g. layer='counts').")


def _splits(y, chosen, seeds, test_size, cap):
    names, counts = np.unique(y, return_counts=True)
    small = names[counts < 2].tolist()
    if small:
        raise ValueError(f"cell type(s) {small} have a single cell; a stratified split needs at "
                         "least 2 cells of every type: drop them first, e.g. "
                         "adata = adata[~adata.obs[labels_key].isin([...])].copy().")
    splits = {}
    for seed in seeds:
        try:
            train, test = rare_split(y, seed=seed, types=chosen, test_size=test_size, cap=cap)
        except ValueError as err:
            raise ValueError(f"the stratified split with test_size={test_size} fails on these "
                             f"labels ({err}); change test_size or drop the smallest types.") from None
        for t in chosen:
            n_tr, n_te = int((y[train] == t).sum()), int((y[test] == t).sum())
            if n_te < 1 or n_tr < 2:
                raise ValueError(
                    f"cell type {t!r} has {int((y == t).sum())} cells: the split of seed {seed} "
                    f"holds out {n_te} and trains on {n_tr}; the protocol needs at least 1 held-out "
                    "and 2 training cells of each chosen type. Choose larger types (types=[...]), "
                    "or raise cap.")
        splits[seed] = (train, test)
    return splits


def _seeds_of(seeds, random_state):
    if isinstance(seeds, Integral) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be at least 1 (5 give a useful interval), got {seeds}.")
        base = 0 if random_state is None else int(random_state)
        return [base + i for i in range(int(seeds))]
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a positive number or a list of distinct ints, got {seeds}.")
    return seeds


# -- synthesis --------------------------------------------------------------------------------------
def _log_norm(X):
    from .preprocessing import NormalizeLog1p

    return NormalizeLog1p().fit_transform(X)


def _stack(a, b):
    if sp.issparse(a) or sp.issparse(b):
        return sp.vstack([sp.csr_matrix(a), sp.csr_matrix(b)], format="csr")
    return np.concatenate([np.asarray(a), np.asarray(b)])


class _Split:
    """The training cells of one split and the autoencoder fitted on them once, timed."""

    def __init__(self, X, y, seed, params, device):
        self.X, self.y, self.seed, self.params, self.device = X, y, seed, params, device
        self._ae = None

    def autoencoder(self):
        if self._ae is None:
            from .autoencoder import CellAutoencoder
            from .train import validation_split

            # as SCLD's own autoencoder: early-stopping cells only from types of >= 100 cells
            groups = np.unique(self.y, return_inverse=True)[1]
            validation = validation_split(groups, 0.1, self.seed)
            t0 = time.perf_counter()
            ae = CellAutoencoder(**{"device": self.device, **self.params.get("autoencoder", {}),
                                    "random_state": self.seed, "verbose": False})
            ae.fit(self.X, validation_cells=None if validation is None else validation)
            self._ae = (ae, time.perf_counter() - t0)
        return self._ae


def _imblearn(name, split, X_log, strategy, seed, params):
    import imblearn.over_sampling as imb

    cls = getattr(imb, name)
    if SAMPLERS[name]["space"] == "counts":
        return cls(sampling_strategy=strategy, random_state=seed, **params), split.X
    smallest = min(int((split.y == t).sum()) for t in strategy)
    k = min(5, smallest - 1)
    if k < 1:
        raise _Skip(f"a type to grow has {smallest} training cell(s); {name} needs 2")
    arg = "n_neighbors" if name == "ADASYN" else "k_neighbors"
    return cls(**{arg: k, "sampling_strategy": strategy, "random_state": seed, **params}), X_log


class _Skip(Exception):
    """A sampler that cannot run on this split, for the reason given."""


def _synthesize(name, split, X_log, strategy, seed, params, device):
    """``(X_syn_log, y_syn, seconds)`` of sampler ``name`` on one split."""
    kind = SAMPLERS[name]["kind"]
    own = dict(params.get(name, {}))
    if kind == "none" or not strategy:
        return X_log[:0], split.y[:0], 0.0
    if kind == "scvi":
        t0 = time.perf_counter()
        X_syn, y_syn = _scvi(split, strategy, seed, own, device)
        return _log_norm(X_syn), y_syn, time.perf_counter() - t0
    fit_s = 0.0
    if kind == "imblearn":
        sampler, X_in = _imblearn(name, split, X_log, strategy, seed, own)
    elif kind == "latent":
        from .baselines import LatentOverSampler

        ae, fit_s = split.autoencoder()
        sampler, X_in = LatentOverSampler(**{"autoencoder": ae, **own, "sampling_strategy": strategy,
                                             "random_state": seed}), split.X
    else:
        from .oversampler import SCLDOverSampler

        ae, fit_s = split.autoencoder()
        sampler, X_in = SCLDOverSampler(**{"model": ae, "device": device, **own,
                                           "sampling_strategy": strategy, "random_state": seed,
                                           "verbose": False}), split.X
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            X_res, y_res = sampler.fit_resample(X_in, split.y)
        except (ValueError, RuntimeError) as err:
            if kind == "imblearn":  # e.g. ADASYN: no neighbour of another type, nothing generated
                raise _Skip(f"{type(err).__name__}: {err}") from None
            raise
    n = X_in.shape[0]
    X_syn, y_syn = X_res[n:], np.asarray(y_res)[n:].astype(str)
    if SAMPLERS[name]["space"] == "counts":
        X_syn = _log_norm(X_syn)
    return X_syn, y_syn, fit_s + time.perf_counter() - t0


def _scvi(split, strategy, seed, params, device):
    """scVI (scvi-tools' ``SCVI`` with defaults unless ``params`` say otherwise) trained on the
    training counts; each new cell a posterior predictive draw around a training cell of its type
    (drawn with replacement)."""
    import anndata as ad
    import scvi

    scvi.settings.seed = seed
    X = sp.csr_matrix(split.X, dtype=np.float32) if sp.issparse(split.X) else np.asarray(
        split.X, dtype=np.float32)
    adata = ad.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(X.shape[0])]))
    scvi.model.SCVI.setup_anndata(adata)
    model = scvi.model.SCVI(adata, **params.get("model", {}))
    train = {"enable_progress_bar": False, **params.get("train", {})}
    if device == "cpu":
        train.setdefault("accelerator", "cpu")
    model.train(**train)
    rng = np.random.default_rng(seed)
    parts, labels = [], []
    for t, goal in strategy.items():
        members = np.flatnonzero(split.y == t)
        idx = rng.choice(members, size=goal - len(members), replace=True)
        draws = model.posterior_predictive_sample(adata, indices=idx.tolist(), n_samples=1)
        draws = draws.todense() if hasattr(draws, "todense") else draws
        parts.append(np.asarray(draws, dtype=np.float32).reshape(len(idx), X.shape[1]))
        labels += [t] * len(idx)
    return np.concatenate(parts), np.asarray(labels)


# -- scores -----------------------------------------------------------------------------------------
def _scores(y_true, y_pred, chosen):
    from sklearn.metrics import balanced_accuracy_score, f1_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per = f1_score(y_true, y_pred, labels=chosen, average=None, zero_division=0)
        scores = dict(macro_f1=float(f1_score(y_true, y_pred, labels=np.unique(y_true),
                                              average="macro", zero_division=0)),
                      rare_f1=float(np.mean(per)),
                      balanced_accuracy=float(balanced_accuracy_score(y_true, y_pred)))
    return scores, {t: float(f) for t, f in zip(chosen, per, strict=True)}


def _realism(X_te_log, y_te, X_syn, y_syn, chosen, seed):
    from .metrics import c2st_auc

    aucs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few held-out cells: c2st_auc warns that it is noisy
        for t in chosen:
            held, syn = X_te_log[y_te == t], X_syn[y_syn == t]
            if held.shape[0] >= REALISM_MIN_CELLS and syn.shape[0] >= 2:
                aucs.append(c2st_auc(held, syn, random_state=seed))  # as the suite scores it
    return float(np.mean(aucs)) if aucs else float("nan")


def _dense(X):
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)


# -- the protocol -----------------------------------------------------------------------------------
def evaluate(X, y, *, classifier="xgboost", rare=3, types=None, cap=None, seeds=5, samplers=None,
             test_size=0.3, sampling_strategy="auto", sampler_params=None, realism=True,
             random_state=0, device="auto", n_jobs=1, estimate=False, verbose=True):
    """Run the protocol on counts ``X`` and labels ``y``: one row per seed and sampler.

    Everything that can make the protocol fail (a type too small to hold out, one class only, a
    count sampler on non-count data, unknown types, samplers or classifier) is checked before
    any model is fitted. See :func:`scaug.tl.evaluate` for the parameters and the frame.

    Examples
    --------
    >>> from scaug.datasets import simulate
    >>> from scaug.evaluation import evaluate, verdict
    >>> adata = simulate(n_cells=300, n_genes=40, n_types=3, n_markers=5, rare_sizes=(20,),
    ...                  random_state=0)
    >>> res = evaluate(adata.X, adata.obs["cell_type"], classifier="logreg", rare=1, cap=8,
    ...                seeds=3, samplers=["none", "RandomOverSampler", "SMOTE"], verbose=False)
    >>> res.shape[0], sorted(res["sampler"].unique())
    (9, ['RandomOverSampler', 'SMOTE', 'none'])
    >>> verdict(res)["answer"] in ("use", "none of them", "no difference shown")
    True
    """
    from sklearn.preprocessing import LabelEncoder

    if not (isinstance(test_size, Real) and 0 < test_size < 1):
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size!r}.")
    if cap is not None and (not isinstance(cap, Integral) or isinstance(cap, bool) or cap < 2):
        raise ValueError(f"cap must be None or an integer >= 2 (training cells kept of each chosen "
                         f"type), got {cap!r}.")
    if sampling_strategy not in ("auto", "rare"):
        raise ValueError(f"sampling_strategy must be 'auto' (every type raised to the largest) or "
                         f"'rare' (only the chosen types), got {sampling_strategy!r}.")
    notes = []
    names = _resolve_samplers(samplers, notes)
    params = _check_sampler_params(sampler_params, names)
    make = _resolve_classifier(classifier)
    if isinstance(X, pd.DataFrame):
        X = X.to_numpy()
    y = np.asarray(y, dtype=object)
    labelled = ~pd.isna(y) & (y != -1)
    if not labelled.all():
        notes.append(f"{int((~labelled).sum())} cells without a label were left out.")
        X, y = X[np.flatnonzero(labelled)], y[labelled]
    if not sp.issparse(X):
        X = np.asarray(X)
    y = y.astype(str)
    _check_data(X, y, names)
    chosen = choose_types(y, rare=rare, types=types)
    seed_list = _seeds_of(seeds, random_state)
    splits = _splits(y, chosen, seed_list, test_size, cap)
    if device != "auto":
        from ._torch_utils import resolve_device

        resolve_device(device)
    enc = LabelEncoder().fit(y)

    rows, per_type, embedding = [], {}, None
    from tqdm.auto import tqdm

    bar = tqdm(total=len(seed_list) * len(names), desc="scaug evaluate", disable=not verbose,
               file=sys.stderr, leave=False)
    started = time.perf_counter()
    for i, seed in enumerate(seed_list):
        train, test = splits[seed]
        X_tr, y_tr, y_te = X[train], y[train], y[test]
        X_tr_log, X_te_log = _log_norm(X_tr), _log_norm(X[test])
        strategy = target_counts(y_tr, only=chosen if sampling_strategy == "rare" else None)
        split = _Split(X_tr, y_tr, seed, params, device)
        syn_first = {}
        for name in names:
            bar.set_postfix_str(f"seed {seed}: {name}")
            row = dict(seed=seed, sampler=name, status="ok", note="", n_train=len(train),
                       n_synthetic=0, augment_s=np.nan, classify_s=np.nan)
            try:
                X_syn, y_syn, row["augment_s"] = _synthesize(name, split, X_tr_log, strategy, seed,
                                                             params, device)
            except _Skip as why:
                row.update(status="skipped", note=str(why)[:300])
            except Exception as err:  # noqa: BLE001 - one sampler's failure must not lose the run
                row.update(status="failed", note=f"{type(err).__name__}: {err}"[:300])
                warnings.warn(f"scaug evaluate: {name} failed on seed {seed}: {row['note']}",
                              RuntimeWarning, stacklevel=2)
            if row["status"] == "ok":
                row["n_synthetic"] = int(len(y_syn))
                clf = make(seed, n_jobs=n_jobs)
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    clf.fit(_stack(X_tr_log, X_syn), enc.transform(np.concatenate([y_tr, y_syn])))
                    pred = enc.inverse_transform(np.asarray(clf.predict(X_te_log)).astype(int))
                row["classify_s"] = time.perf_counter() - t0
                scores, per = _scores(y_te, pred, chosen)
                row.update(scores)
                per_type.setdefault(name, {})[seed] = per
                row["realism_auc"] = (_realism(X_te_log, y_te, X_syn, y_syn, chosen, seed)
                                      if realism and len(y_syn) else np.nan)
                if i == 0:
                    syn_first[name] = (X_syn, y_syn)
            rows.append(row)
            bar.update()
        if i == 0:
            embedding = _embedding(X_tr_log, y_tr, X_te_log, y_te, syn_first, chosen, seed)
            first_s = time.perf_counter() - started
            if (verbose or estimate) and len(seed_list) > 1:
                rest = first_s * (len(seed_list) - 1)
                bar.clear()
                print(f"scaug evaluate: the first split took {first_s:.0f} s; the other "
                      f"{len(seed_list) - 1} take about {rest:.0f} s more (about {(first_s + rest) / 60:.1f} "
                      "min in all).", file=sys.stderr, flush=True)
    bar.close()
    frame = pd.DataFrame(rows)
    for col in _COLUMNS:
        if col not in frame:
            frame[col] = np.nan
    frame = frame[_COLUMNS]
    frame.attrs["scaug_evaluate"] = dict(
        classifier=classifier if isinstance(classifier, str | os.PathLike) else repr(classifier),
        rare_types=chosen, cap=cap, seeds=seed_list, test_size=test_size,
        sampling_strategy=sampling_strategy, samplers=names, n_cells=int(X.shape[0]),
        n_genes=int(X.shape[1]), n_types=int(len(np.unique(y))),
        type_counts={t: int((y == t).sum()) for t in chosen},
        train_counts={t: int((y[splits[seed_list[0]][0]] == t).sum()) for t in chosen},
        test_counts={t: int((y[splits[seed_list[0]][1]] == t).sum()) for t in chosen},
        per_type_f1={n: {int(s): v for s, v in d.items()} for n, d in per_type.items()},
        first_split_s=float(first_s), total_s=float(time.perf_counter() - started),
        notes=notes, embedding=embedding)
    return frame


def _embedding(X_tr_log, y_tr, X_te_log, y_te, syn, chosen, seed):
    """2-D PCA coordinates of the chosen types' real cells (training and held-out) and of each
    sampler's synthetic cells of those types (at most ``_EMBED_MAX`` per type), for the figure."""
    from sklearn.decomposition import PCA

    real = _dense(_stack(X_tr_log[np.isin(y_tr, chosen)], X_te_log[np.isin(y_te, chosen)]))
    real_y = np.concatenate([y_tr[np.isin(y_tr, chosen)], y_te[np.isin(y_te, chosen)]])
    if real.shape[0] < 3:
        return None
    pca = PCA(n_components=2, random_state=seed).fit(real)
    out = {"real": dict(xy=np.round(pca.transform(real), 4).tolist(), type=real_y.tolist())}
    rng = np.random.default_rng(seed)
    for name, (X_syn, y_syn) in syn.items():
        keep = []
        for t in chosen:
            members = np.flatnonzero(y_syn == t)
            keep += sorted(rng.choice(members, size=min(_EMBED_MAX, len(members)), replace=False))
        if keep:
            keep = np.asarray(keep)
            out[name] = dict(xy=np.round(pca.transform(_dense(X_syn[keep])), 4).tolist(),
                             type=y_syn[keep].tolist())
    return out


# -- the report -------------------------------------------------------------------------------------
def _mean_sd(values, digits=3):
    v = np.asarray([x for x in values if pd.notna(x)], dtype=float)
    if v.size == 0:
        return ""
    return f"{v.mean():.{digits}f}" if v.size == 1 else f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def _table(header, body):
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in body), ""]


def _figures(results, comps, info, out_dir):
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed: no figures (pip install matplotlib)."
    files = []
    ok = comps[comps["n"] > 0]
    if not ok.empty:
        fig, ax = plt.subplots(figsize=(6.5, 0.5 * len(ok) + 1.5))
        pos = np.arange(len(ok))[::-1]
        colour = {"win": "tab:green", "loss": "tab:red"}
        for p, (_, r) in zip(pos, ok.iterrows(), strict=True):
            err = None if not np.isfinite(r["lo"]) else [[r["diff"] - r["lo"]], [r["hi"] - r["diff"]]]
            ax.errorbar(r["diff"], p, xerr=err, fmt="o", capsize=4,
                        color=colour.get(r["verdict"], "tab:grey"))
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(pos, [f"{r['sampler']} ({r['mean']:.2f})" for _, r in ok.iterrows()])
        ax.set_xlabel("rare-type F1 minus no augmentation (95 % paired interval)")
        ax.set_title(f"{info['classifier']}: no augmentation {ok['baseline_mean'].iloc[0]:.2f}; "
                     "green win, red loss", fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "f1.png"), dpi=120)
        plt.close(fig)
        files.append(("Rare-type F1 of each sampler minus no augmentation, with its 95 % paired "
                      "interval over seeds (mean F1 in brackets)", "f1.png"))
    emb = info.get("embedding")
    shown = [n for n in (emb or {}) if n not in ("real", "none")]
    if shown:
        cols = min(3, len(shown))
        rows_n = int(np.ceil(len(shown) / cols))
        fig, axes = plt.subplots(rows_n, cols, figsize=(3.6 * cols, 3.3 * rows_n), squeeze=False)
        real = np.asarray(emb["real"]["xy"])
        real_t = np.asarray(emb["real"]["type"])
        palette = plt.get_cmap("tab10")
        for ax, name in zip(axes.ravel(), shown, strict=False):
            xy, ty = np.asarray(emb[name]["xy"]), np.asarray(emb[name]["type"])
            for j, t in enumerate(info["rare_types"]):
                m = ty == t
                if m.any():
                    ax.scatter(xy[m, 0], xy[m, 1], s=5, color=palette(j % 10), alpha=0.6,
                               label=t, zorder=1)
                if (real_t == t).any():
                    ax.scatter(*real[real_t == t].T, s=14, color=palette(j % 10),
                               edgecolors="black", lw=0.3, marker="D", zorder=3)
            ax.set_title(name, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes.ravel()[len(shown):]:
            ax.axis("off")
        axes[0, 0].legend(fontsize=6, loc="best")
        fig.suptitle("Rare types on the PCA of their real cells (seed "
                     f"{info['seeds'][0]}): real cells diamonds, synthetic dots", fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "embedding.png"), dpi=120)
        plt.close(fig)
        files.append(("Real (diamonds) and synthetic (dots) cells of the rare types on one PCA "
                      "(the first seed)", "embedding.png"))
    return files, None


def report(results, out_dir=None, *, metric="rare_f1"):
    """The answer as a short markdown report; with ``out_dir``, also written there with figures.

    ``out_dir`` receives ``report.md``, ``results.csv`` (the frame), and, when matplotlib is
    installed, ``f1.png`` (each sampler's rare-type F1 minus no augmentation, with its interval)
    and ``embedding.png`` (real and synthetic cells of the rare types on one PCA).

    Parameters
    ----------
    results : DataFrame
        The frame of :func:`scaug.tl.evaluate` (its ``attrs`` carry the settings and the
        embedding).
    out_dir : str or path-like or None, default=None
        Folder to write to (created if needed); None returns the text only.
    metric : str, default="rare_f1"
        The score the answer rests on.

    Returns
    -------
    str
        The markdown text; its first lines are the answer (:func:`verdict`).

    Examples
    --------
    >>> import pandas as pd
    >>> from scaug.evaluation import report
    >>> frame = pd.DataFrame({"seed": [0, 1, 2] * 2, "sampler": ["none"] * 3 + ["SMOTE"] * 3,
    ...                       "status": "ok", "rare_f1": [0.5, 0.6, 0.4, 0.5, 0.7, 0.3],
    ...                       "augment_s": [0.0] * 3 + [0.1] * 3})
    >>> print(report(frame).splitlines()[2])
    **No difference shown**: with 3 seeds, no sampler's interval for rare-type F1 against no augmentation ...
    """
    info = dict(results.attrs.get("scaug_evaluate", {}))
    info.setdefault("classifier", "the classifier")
    info.setdefault("rare_types", [])
    info.setdefault("seeds", sorted(results["seed"].unique().tolist()))
    v = verdict(results, metric=metric)
    comps = v["comparisons"]
    head = {"use": "Use", "none of them": "None of them", "no difference shown": "No difference shown",
            "n/a": "No answer"}[v["answer"]]
    text = v["text"]
    if v["answer"] != "use":  # "None of them: ..." -> "**None of them**: ..."
        text = f"**{head}**: " + text.split(": ", 1)[1]
    lines = ["# Will augmentation help my classifier?", "", text, ""]
    if info.get("n_cells"):
        counts = ", ".join(f"{t} ({info['type_counts'][t]} cells; {info['train_counts'][t]} training, "
                           f"{info['test_counts'][t]} held out)" for t in info["rare_types"])
        lines += [f"Data: {info['n_cells']} cells, {info['n_genes']} genes, {info['n_types']} types. "
                  f"Classifier: {info['classifier']}. Rare types: {counts} (first seed"
                  + (f"; training cells capped at {info['cap']}" if info.get("cap") else "") + "). "
                  f"Seeds: {info['seeds']}. Held out: {info['test_size']:.0%} of every type.", ""]
    body = []
    for name in dict.fromkeys(results["sampler"]):
        got = results[results["sampler"] == name]
        okay = got[got["status"] == "ok"]
        c = comps[comps["sampler"] == name]
        diff = "" if c.empty else _fmt(c.iloc[0]) if c.iloc[0]["n"] else ""
        ver = "(baseline)" if name == "none" else "" if c.empty else (
            c.iloc[0]["verdict"] if c.iloc[0]["n"] else "skipped")
        body.append([name, _mean_sd(okay.get("rare_f1", [])), diff, ver,
                     _mean_sd(okay.get("macro_f1", [])), _mean_sd(okay.get("balanced_accuracy", [])),
                     _mean_sd(okay.get("realism_auc", [])), _mean_sd(okay.get("augment_s", []), 1)])
    lines += _table(["sampler", "rare-type F1", "minus none [95 % CI]", "verdict", "macro-F1",
                     "balanced accuracy", "realism AUC", "augment s"], body)
    skipped = results[results["status"] != "ok"]
    notes = list(info.get("notes", [])) + [f"{r['sampler']}, seed {r['seed']}: {r['status']} ({r['note']})"
                                           for _, r in skipped.iterrows()]
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        results.to_csv(os.path.join(out_dir, "results.csv"), index=False)
        files, missing = _figures(results, comps, info, out_dir)
        lines += [f"![{caption}]({file})\n\n*{caption}.*\n" for caption, file in files]
        if missing:
            notes.append(missing)
    if notes:
        lines += ["Notes:", "", *(f"- {n}" for n in notes), ""]
    lines += ["How this was measured: per seed, a stratified split holds out real cells of every "
              "type; each sampler augments the training cells only ("
              + ("the chosen rare types" if info.get("sampling_strategy") == "rare" else "every type")
              + " up to the largest type), the classifier learns from log-normalised cells and is "
              "scored on the held-out real cells. Each sampler is compared with no augmentation on the same "
              "splits: a 95 % paired-t interval over seeds, a win or a loss only when it excludes "
              "zero. Realism AUC: a classifier telling the synthetic rare cells from held-out real "
              f"ones (0.5: indistinguishable), averaged over the rare types with at least "
              f"{REALISM_MIN_CELLS} held-out cells; with few cells it is noisy. Augment s: "
              "fitting and sampling, autoencoder fits counted in full for each sampler."]
    text_out = "\n".join(lines).rstrip() + "\n"
    if out_dir is not None:
        with open(os.path.join(out_dir, "report.md"), "w") as fh:
            fh.write(text_out)
    return text_out
