"""Downstream rare-cell benchmark: does augmenting the training split help classifiers on rare types?

Protocol (section 5 of SCLD.md). For each data set, seed and regime a stratified train/test split
(``_common.rare_split``, 30 % test); the regimes are ``natural`` (no cap), ``cap20`` and ``cap10``
(the three rarest training types keep 20 or 10 training cells; the test cells are the same in every
regime). Only the training split is augmented, with imbalanced-learn's default
``sampling_strategy="auto"`` for every augmenter (every type raised to the size of the largest):

- ``none``; ``RandomOverSampler`` (on counts: it copies cells);
- ``SMOTE``, ``ADASYN``, ``BorderlineSMOTE`` on log-normalised training cells (they interpolate,
  and interpolating log-normalised values is what a classifier pipeline would do; interpolated raw
  counts would not be counts anyway); ``k_neighbors = min(5, smallest training type - 1)``;
- SCLD through ``SCLDOverSampler``, on counts, every variant with its settings in full
  (``SCLD_VARIANTS``), so that a change of scaug's defaults never changes what a cached row
  means. ``SCLD``: the defaults (latent smoothing 4, plain conditional sampling w=1, no
  post-guidance); ``SCLD, CFG w=2`` and ``SCLD, all three guidances`` sample the same model with
  classifier-free guidance w=2, alone or with classifier guidance and screening. ``SCLD revision
  1`` is the first defaults (no latent smoothing, all three guidances), with its ablations ``SCLD
  revision 1, no post-guidance`` (w=2 alone), ``SCLD revision 1, w=1`` and ``SCLD revision 1,
  gene-cell AE`` (an autoencoder of per-cell dispersion, ``CellAutoencoder(dispersion=
  "gene-cell")``). Each fit group is fitted once per (data set, seed, regime) on the training
  split and shared by its sampling variants and the classifiers.

Every classifier sees log-normalised input (``NormalizeLog1p``: counts scaled to 10,000 per cell,
then log1p; no further scaling): XGBoost (hist, labels encoded 0..K-1), logistic regression
(max_iter=1000), random forest, 5-nearest neighbours. Scores on the held-out real test cells:
macro-F1, mean F1 over the three rare types, balanced accuracy; plus wall time of augmentation and
of classifier fitting.

Fidelity: for each rare type, synthetic cells (those an augmenter generated for the type) against
the real cells of the type that are not in the training split (test cells plus those a cap
removed), with ``scaug.metrics.c2st_auc`` in log-normalised space (0.5 is ideal) and
``dcr_ratio`` (about 1 is healthy, 0 is copying: RandomOverSampler's cells are copies, which c2st
cannot see). The reference AUC compares those held-out real cells with the type's real training
cells when there are at least 10 of them, else two random halves of the held-out cells. Types with
fewer than 5 held-out cells get no fidelity score (too few for an AUC).

Results are cached per (data set, seed, regime, augmenter, classifier) in benchmarks/.cache/, so an
interrupted run resumes; ``--no-cache`` recomputes (and overwrites the cache).

    SCAUG_DATA_DIR=../shared/data python benchmarks/downstream.py            # everything (hours)
    SCAUG_DATA_DIR=../shared/data python benchmarks/downstream.py --quick    # minutes

writes downstream.md, downstream.json and PNG figures into --out-dir (default docs/).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import sys
import time
import warnings

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DOCS, load_counts, machine, rare_split, write_json  # noqa: E402

from scaug import SCLD, CellAutoencoder, metrics  # noqa: E402
from scaug.preprocessing import NormalizeLog1p  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, ".cache", "downstream")

DATASETS = ["pbmc68k_reduced", "pbmc3k", "cbmc", "paul15", "bladder"]
REGIMES = {"natural": None, "cap20": 20, "cap10": 10}
BASELINES = ["RandomOverSampler", "SMOTE", "ADASYN", "BorderlineSMOTE"]
# SCLD fits: name -> (cache key of its fit record, SCLD parameters). An unfitted autoencoder is a
# template that SCLD trains.
SCLD_FITS = {
    "smoothing 4": ("scld_fit SCLD latent smoothing 4", dict(latent_smoothing=4.0)),
    "revision 1": ("scld_fit", dict(latent_smoothing=0.0)),
    "revision 1, gene-cell AE": ("scld_fit SCLD gene-cell AE", dict(
        latent_smoothing=0.0, autoencoder=CellAutoencoder(dispersion="gene-cell"))),
}
W1 = dict(guidance_scale=1.0, classifier_scale=0.0, screening=False)
CFG = dict(guidance_scale=2.0, classifier_scale=0.0, screening=False)
ALL_THREE = dict(guidance_scale=2.0, classifier_scale=1.0, screening=True)
# SCLD variants: name -> (fit, SCLDOverSampler sampling options, cache key). The cache keys are
# the names the rows were computed under (the defaults were revision 1's until the smoothed model
# sampled at w=1 replaced them; the rows of both are the same computations).
SCLD_VARIANTS = {
    "SCLD": ("smoothing 4", W1, "SCLD latent smoothing 4, w=1"),
    "SCLD, CFG w=2": ("smoothing 4", CFG, "SCLD latent smoothing 4, CFG only"),
    "SCLD, all three guidances": ("smoothing 4", ALL_THREE, "SCLD latent smoothing 4"),
    "SCLD revision 1": ("revision 1", ALL_THREE, "SCLD"),
    "SCLD revision 1, no post-guidance": ("revision 1", CFG, "SCLD no post-guidance"),
    "SCLD revision 1, w=1": ("revision 1", W1, "SCLD conditional w=1"),
    "SCLD revision 1, gene-cell AE": ("revision 1, gene-cell AE", ALL_THREE, "SCLD gene-cell AE"),
}


def fit_group(aug: str) -> str:
    """The SCLD fit (a key of ``SCLD_FITS``) that a variant samples from."""
    return SCLD_VARIANTS[aug][0]


AUGMENTERS = ["none", *BASELINES, *SCLD_VARIANTS]
CLASSIFIERS = ["xgboost", "logreg", "random_forest", "knn"]
FIG_AUGMENTERS = ["SCLD", "SCLD revision 1", "SMOTE"]  # shown in the UMAP figure
# A model revision 2 (gene-cell dispersion, latent noise 1.0, latent smoothing 4) was measured and
# reverted; its cached rows carry ' r2' and are not read.
MIN_HELDOUT = 5  # fewest held-out cells of a type for a fidelity score
MAX_SYN_EMBED = 300  # synthetic cells per type kept for the UMAP figure

QUICK = dict(datasets=["pbmc68k_reduced"], seeds=[0], regimes=["cap10"],
             augmenters=["none", "RandomOverSampler", "SMOTE", "SCLD", "SCLD revision 1"],
             classifiers=["xgboost", "logreg"])
QUICK_SCLD = dict(max_epochs=100, diffusion_steps=1500)  # seconds on a laptop CPU
QUICK_SAMPLE_STEPS = 20


# ------------------------------------------------------------------------------------------------
# cache
# ------------------------------------------------------------------------------------------------
def _slug(text) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(text)).strip("_")


class Cache:
    """One JSON file per key under benchmarks/.cache/downstream/<tag>/."""

    def __init__(self, tag: str, read: bool):
        self.root = os.path.join(CACHE, tag)
        self.read = read

    def path(self, *key, ext="json"):
        return os.path.join(self.root, "__".join(_slug(k) for k in key) + "." + ext)

    def get(self, *key):
        p = self.path(*key)
        if self.read and os.path.exists(p):
            with open(p) as fh:
                return json.load(fh)
        return None

    def put(self, value, *key):
        write_json(value, self.path(*key), default=_json_default)

    def has_npz(self, *key):
        return self.read and os.path.exists(self.path(*key, ext="npz"))

    def put_npz(self, *key, **arrays):
        p = self.path(*key, ext="npz")
        os.makedirs(os.path.dirname(p), exist_ok=True)
        np.savez_compressed(p, **arrays)


def _cache_name(aug: str) -> str:
    """Cache key of an augmenter: its name, or the name an SCLD variant's rows were computed under."""
    return SCLD_VARIANTS[aug][2] if aug in SCLD_VARIANTS else aug


def _named(cached, aug):
    """Cached rows under the augmenter's present name (rows keep the name they were run under)."""
    if cached is None:
        return None
    if isinstance(cached, list):
        return [dict(r, augmenter=aug) if r.get("augmenter") != "reference" else r for r in cached]
    return dict(cached, augmenter=aug)


def _json_default(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


# ------------------------------------------------------------------------------------------------
# pieces
# ------------------------------------------------------------------------------------------------
def load(name):
    """Counts (CSR) and labels; types with fewer than 2 cells are dropped (a stratified split needs
    2). ``load_counts`` reads pbmc68k_reduced too (``scaug.datasets.load`` knows it)."""
    X, y = load_counts(name)
    types, counts = np.unique(y, return_counts=True)
    tiny = types[counts < 2]
    if len(tiny):
        print(f"{name}: dropping types with < 2 cells: {list(tiny)}", flush=True)
        keep = ~np.isin(y, tiny)
        X, y = X[keep], y[keep]
    return X, y, [str(t) for t in tiny]


def make_classifier(name, seed):
    if name == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier(n_jobs=2, tree_method="hist", random_state=seed)
    if name == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=1000)
    if name == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_jobs=2, random_state=seed)
    if name == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=5)
    raise ValueError(f"unknown classifier {name!r}")


def augment(name, X_tr, X_tr_log, y_tr, norm, seed, scld_model, n_sample_steps):
    """Augmented log-normalised training cells, labels and the synthetic-row mask."""
    n = len(y_tr)
    if name == "none":
        return X_tr_log, y_tr, np.zeros(n, dtype=bool), {}
    if name == "RandomOverSampler":
        from imblearn.over_sampling import RandomOverSampler

        Xr, yr = RandomOverSampler(random_state=seed).fit_resample(X_tr, y_tr)
        return norm.transform(Xr), yr, np.arange(len(yr)) >= n, {}
    if name in SCLD_VARIANTS:
        from scaug.oversampler import SCLDOverSampler

        s = SCLDOverSampler(model=scld_model, random_state=seed, n_sample_steps=n_sample_steps,
                            **SCLD_VARIANTS[name][1])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Xr, yr = s.fit_resample(X_tr, y_tr)
        if caught:  # screening that gave up on some types: keep the log short, the JSON complete
            print(f"    {name}: {len(caught)} warning(s) while sampling, e.g. {caught[0].message}",
                  flush=True)
        acc = {str(k): v.get("acceptance_rate") for k, v in s.sampling_report_.items()}
        return norm.transform(Xr), yr, s.synthetic_mask_, {
            "acceptance": acc, "warnings": [str(w.message) for w in caught]}
    from imblearn.over_sampling import ADASYN, SMOTE, BorderlineSMOTE

    k = min(5, int(np.unique(y_tr, return_counts=True)[1].min()) - 1)
    if k < 1:
        raise ValueError("a training type has a single cell; no neighbours to interpolate")
    sampler = {"SMOTE": lambda: SMOTE(k_neighbors=k, random_state=seed),
               "ADASYN": lambda: ADASYN(n_neighbors=k, random_state=seed),
               "BorderlineSMOTE": lambda: BorderlineSMOTE(k_neighbors=k, random_state=seed)}[name]()
    Xr, yr = sampler.fit_resample(X_tr_log, y_tr)  # originals first, then synthetic rows
    return Xr, yr, np.arange(len(yr)) >= n, {"k_neighbors": k}


def scores(y_true, y_pred, rare):
    from sklearn.metrics import balanced_accuracy_score, f1_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per = f1_score(y_true, y_pred, labels=rare, average=None, zero_division=0)
        return dict(macro_f1=float(f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro",
                                            zero_division=0)),
                    rare_f1=float(np.mean(per)),
                    rare_f1_per_type={str(t): float(f) for t, f in zip(rare, per, strict=True)},
                    balanced_accuracy=float(balanced_accuracy_score(y_true, y_pred)))


def _safe(fn, *a, **kw):
    try:
        return float(fn(*a, **kw))
    except Exception:  # noqa: BLE001 - too few cells and the like: no score
        return float("nan")


def reference_rows(X_log, y, train, rare, held, seed, base):
    rows = []
    rng = np.random.default_rng(seed)
    for t in rare:
        tr = train[y[train] == t]
        h = held[t]
        row = dict(base, kind="fidelity", augmenter="reference", type=str(t), n_train=len(tr),
                   n_heldout=len(h), n_synthetic=0, dcr_ratio=float("nan"))
        if len(h) < MIN_HELDOUT:
            row.update(c2st_auc=float("nan"), reference_method="too few held-out cells")
        elif len(tr) >= 10:
            row.update(c2st_auc=_safe(metrics.c2st_auc, X_log[h], X_log[tr], random_state=seed),
                       reference_method="held-out vs training real cells")
        else:
            p = rng.permutation(h)
            half = len(p) // 2
            row.update(c2st_auc=_safe(metrics.c2st_auc, X_log[p[:half]], X_log[p[half:]],
                                      random_state=seed),
                       reference_method="two halves of held-out real cells")
        rows.append(row)
    return rows


def fidelity_rows(X_log, y, train, rare, held, syn_log, syn_y, seed, base):
    rows = []
    for t in rare:
        tr, h = train[y[train] == t], held[t]
        s = syn_log[syn_y == t] if syn_log is not None else None
        n_syn = 0 if s is None else s.shape[0]
        row = dict(base, kind="fidelity", type=str(t), n_train=len(tr), n_heldout=len(h),
                   n_synthetic=n_syn, c2st_auc=float("nan"), dcr_ratio=float("nan"))
        if n_syn >= 2 and len(h) >= MIN_HELDOUT:
            row["c2st_auc"] = _safe(metrics.c2st_auc, X_log[h], s, random_state=seed)
        if n_syn >= 1 and len(tr) >= 2 and len(h) >= 1:
            row["dcr_ratio"] = _safe(metrics.dcr_ratio, X_log[tr], s, X_log[h], random_state=seed)
        rows.append(row)
    return rows


def _dense(M):
    return np.asarray(M.toarray() if sp.issparse(M) else M, dtype=np.float32)


# ------------------------------------------------------------------------------------------------
# one (data set, seed, regime)
# ------------------------------------------------------------------------------------------------
def run_unit(name, X, y, seed, regime, args, cache, fig_unit):
    from sklearn.preprocessing import LabelEncoder

    tag = f"[{name} seed={seed} {regime}]"
    train, test, rare = rare_split(y, seed=seed, cap=REGIMES[regime])
    rare = [str(t) for t in rare]
    norm = NormalizeLog1p().fit(X[train])  # per-cell, stateless with target_sum=1e4
    X_log = norm.transform(X)
    X_tr, X_tr_log, y_tr = X[train], X_log[train], y[train]
    held = {t: np.setdiff1d(np.flatnonzero(y == t), train) for t in rare}
    enc = LabelEncoder().fit(y)
    base = dict(dataset=name, seed=seed, regime=regime)
    print(f"{tag} {len(train)} training / {len(test)} test cells; rare types "
          + ", ".join(f"{t} ({(y_tr == t).sum()} train, {len(held[t])} held out)" for t in rare),
          flush=True)
    rows = []

    ref = cache.get(name, seed, regime, "reference")
    if ref is None:
        ref = reference_rows(X_log, y, train, rare, held, seed, base)
        cache.put(ref, name, seed, regime, "reference")
    rows += ref
    if fig_unit and not cache.has_npz(name, seed, regime, "real"):
        idx = np.flatnonzero(np.isin(y, rare))
        cache.put_npz(name, seed, regime, "real", X=_dense(X_log[idx]), y=y[idx].astype(str),
                      train=np.isin(idx, train))

    models, fits = {}, {}  # fitted SCLD and its fit record, per fit group
    for aug in args.augmenters:
        group = fit_group(aug) if aug in SCLD_VARIANTS else None
        key = _cache_name(aug)
        fit_key = SCLD_FITS[group][0] if group else None
        todo = [c for c in args.classifiers if cache.get(name, seed, regime, key, c) is None]
        fid = _named(cache.get(name, seed, regime, key, "fidelity"), aug)
        want_npz = fig_unit and aug in FIG_AUGMENTERS and not cache.has_npz(name, seed, regime, key)
        if args.from_cache and (todo or fid is None):  # report what there is, compute nothing
            got = [_named(cache.get(name, seed, regime, key, c), aug) for c in args.classifiers]
            rows += (fid or []) + [r for r in got if r is not None]
            continue
        if not todo and fid is not None and not want_npz:
            rows += fid + [_named(cache.get(name, seed, regime, key, c), aug)
                           for c in args.classifiers]
            print(f"{tag} {aug}: cached", flush=True)
            continue
        if group and group not in models:
            print(f"{tag} fitting SCLD ({group}) on the training split ...", flush=True)
            t0 = time.perf_counter()
            models[group] = SCLD(random_state=seed, verbose=args.verbose, device=args.device,
                                 **args.scld_params, **SCLD_FITS[group][1]).fit(X_tr, y_tr)
            fits[group] = dict(base, kind="scld_fit", augmenter=group,
                               seconds=time.perf_counter() - t0)
            cache.put(fits[group], name, seed, regime, fit_key)
            print(f"{tag} {group} fitted in {fits[group]['seconds']:.1f} s", flush=True)
        info = dict(base, augmenter=aug, n_train=len(train), rare_types=rare)
        t0 = time.perf_counter()
        try:
            Xa, ya, mask, extra = augment(aug, X_tr, X_tr_log, y_tr, norm, seed, models.get(group),
                                          args.n_sample_steps)
            info.update(status="ok", error=None, aug_s=time.perf_counter() - t0,
                        n_augmented=len(ya), n_synthetic=int(mask.sum()), **extra)
        except Exception as err:  # noqa: BLE001 - e.g. ADASYN finding no neighbours: record it
            Xa = None
            info.update(status="failed", error=f"{type(err).__name__}: {err}",
                        aug_s=time.perf_counter() - t0, n_augmented=0, n_synthetic=0)
            print(f"{tag} {aug}: FAILED ({info['error']})", flush=True)
        fit = (fits.get(group) or cache.get(name, seed, regime, fit_key)) if group else None
        if fit is not None:
            info["scld_fit_s"] = fit["seconds"]

        syn_log = syn_y = None
        if Xa is not None and mask.any():
            syn_log, syn_y = Xa[mask], np.asarray(ya)[mask]
        if fid is None:
            fid = fidelity_rows(X_log, y, train, rare, held, syn_log, syn_y, seed,
                                dict(base, augmenter=aug, status=info["status"]))
            cache.put(fid, name, seed, regime, key, "fidelity")
        rows += fid
        if want_npz and syn_log is not None:
            rng = np.random.default_rng(seed)
            keep = np.concatenate([
                rng.permutation(np.flatnonzero(syn_y == t))[:MAX_SYN_EMBED] for t in rare])
            cache.put_npz(name, seed, regime, key, X=_dense(syn_log[keep]),
                          y=syn_y[keep].astype(str))

        for clf_name in args.classifiers:
            row = _named(cache.get(name, seed, regime, key, clf_name), aug) if clf_name not in todo \
                else None
            if row is None:
                row = dict(info, kind="score", classifier=clf_name)
                if Xa is not None:
                    clf = make_classifier(clf_name, seed)
                    t1 = time.perf_counter()
                    clf.fit(Xa, enc.transform(ya))
                    row["clf_fit_s"] = time.perf_counter() - t1
                    pred = enc.inverse_transform(np.asarray(clf.predict(X_log[test])).astype(int))
                    row.update(scores(y[test], pred, rare))
                cache.put(row, name, seed, regime, key, clf_name)
                if row["status"] == "ok":
                    print(f"{tag} {aug:<22} {clf_name:<13} rare F1 {row['rare_f1']:.3f}  macro F1 "
                          f"{row['macro_f1']:.3f}  bal.acc {row['balanced_accuracy']:.3f}  "
                          f"(augment {row['aug_s']:.1f} s, fit {row['clf_fit_s']:.1f} s)", flush=True)
            rows.append(row)
    return rows + list(fits.values())


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def _ms(values, digits=3):
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return ""
    return f"{v.mean():.{digits}f}" if v.size == 1 else f"{v.mean():.{digits}f}±{v.std(ddof=1):.{digits}f}"


def _mean(values):
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    return float(v.mean()) if v.size else float("nan")


def _sd(values):
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    return float(v.std(ddof=1)) if v.size > 1 else float("nan")


def _table(header, body):
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in body)]


def _pick(rows, **kw):
    return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]


def summary(rows, args, fig_regime, aug="SCLD"):
    """Per data set and classifier in the figure regime: an SCLD variant vs the best imblearn
    baseline."""
    out = []
    for name in args.datasets:
        ref = _pick(rows, kind="fidelity", dataset=name, regime=fig_regime, augmenter="reference")
        fid = _pick(rows, kind="fidelity", dataset=name, regime=fig_regime, augmenter=aug)
        refd = {(r["seed"], r["type"]): r["c2st_auc"] for r in ref}
        gaps = [r["c2st_auc"] - refd.get((r["seed"], r["type"]), np.nan) for r in fid]
        gap = _mean(gaps)
        for clf in args.classifiers:
            def f1s(aug, name=name, clf=clf):
                return [r["rare_f1"] for r in _pick(rows, kind="score", dataset=name, regime=fig_regime,
                                                     augmenter=aug, classifier=clf, status="ok")]
            scld = f1s(aug)
            base = {a: f1s(a) for a in BASELINES if a in args.augmenters and f1s(a)}
            if not scld or not base:
                continue
            best = max(base, key=lambda a: _mean(base[a]))
            diff = _mean(scld) - _mean(base[best])
            tol = _sd(base[best]) if np.isfinite(_sd(base[best])) else 0.01
            verdict = "beats" if diff > 0 else ("matches" if diff >= -tol else "is below")
            none = _mean(f1s("none")) if f1s("none") else float("nan")
            out.append(dict(dataset=name, classifier=clf, regime=fig_regime, verdict=verdict,
                            scld_rare_f1=_mean(scld), best_baseline=best,
                            best_baseline_rare_f1=_mean(base[best]), difference=diff, tolerance=tol,
                            none_rare_f1=none, scld_auc_minus_reference=gap))
    return out


def regime_table(rows, args, aug="SCLD"):
    """An SCLD variant's rare-type F1 minus the best imblearn baseline's, every regime side by side."""
    if aug not in args.augmenters:
        return []
    by = {g: {(s["dataset"], s["classifier"]): s for s in summary(rows, args, g, aug)}
          for g in args.regimes}
    keys = [(d, c) for d in args.datasets for c in args.classifiers
            if any((d, c) in by[g] for g in args.regimes)]
    if not keys:
        return []
    body = [[d, c, *(f"{by[g][(d, c)]['difference']:+.3f}" if (d, c) in by[g] else "not run"
                     for g in args.regimes)] for d, c in keys]
    counts = []
    for g in args.regimes:
        diffs = [s["difference"] for s in by[g].values()]
        if diffs:
            counts.append(f"{g}: above in {sum(x > 0 for x in diffs)} of {len(diffs)}")
    return [f"`{aug}`: mean rare-type F1 minus the best imbalanced-learn baseline's, per regime "
            "(positive: SCLD is better; " + "; ".join(counts) + "):", "",
            *_table(["data set", "classifier", *args.regimes], body), ""]


def summary_lines(summ):
    lines = []
    for s in summ:
        gap = "n/a" if not np.isfinite(s["scld_auc_minus_reference"]) else \
            f"{s['scld_auc_minus_reference']:+.3f}"
        lines.append(f"{s['dataset']} / {s['classifier']} ({s['regime']}): SCLD rare-type F1 "
                     f"{s['scld_rare_f1']:.3f} {s['verdict']} the best imblearn baseline "
                     f"({s['best_baseline']} {s['best_baseline_rare_f1']:.3f}; difference "
                     f"{s['difference']:+.3f}, no augmentation {s['none_rare_f1']:.3f}); "
                     f"SCLD c2st AUC minus reference AUC {gap}")
    return lines


def figures(rows, args, cache, out_dir, fig_regime):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = {}
    for name in args.datasets:
        files = []
        augs = [a for a in args.augmenters
                if _pick(rows, kind="score", dataset=name, regime=fig_regime, augmenter=a)]
        if augs:
            fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(augs)), 4))
            width = 0.8 / len(args.classifiers)
            for i, clf in enumerate(args.classifiers):
                vals = [[r["rare_f1"] for r in _pick(rows, kind="score", dataset=name, regime=fig_regime,
                                                       augmenter=a, classifier=clf, status="ok")]
                        for a in augs]
                sd = [_sd(v) for v in vals]
                ax.bar(np.arange(len(augs)) + (i - (len(args.classifiers) - 1) / 2) * width,
                       [_mean(v) for v in vals], width,
                       yerr=[0 if not np.isfinite(s) else s for s in sd], label=clf, capsize=2)
            ax.set_xticks(np.arange(len(augs)))
            ax.set_xticklabels(augs, rotation=25, ha="right", fontsize=8)
            ax.set_ylabel("mean F1 over the 3 rare types")
            ax.set_ylim(0, 1)
            ax.set_title(f"{name}, {fig_regime}: rare-type F1 on held-out cells "
                         f"(mean±sd over {len(args.seeds)} seed(s))", fontsize=9)
            ax.legend(fontsize=8)
            fig.tight_layout()
            fn = f"downstream_{name}_rare_f1.png"
            fig.savefig(os.path.join(out_dir, fn), dpi=120)
            plt.close(fig)
            files.append(fn)
        fn = umap_figure(name, args.seeds[0], fig_regime, cache, out_dir, plt)
        if fn:
            files.append(fn)
        made[name] = files
    return made


def umap_figure(name, seed, regime, cache, out_dir, plt):
    paths = {k: cache.path(name, seed, regime, _cache_name(k), ext="npz")
             for k in ["real", *FIG_AUGMENTERS]}
    if not os.path.exists(paths["real"]):
        return None
    real = np.load(paths["real"])
    syn = {a: np.load(p) for a, p in paths.items() if a != "real" and os.path.exists(p)}
    if not syn:
        return None
    from sklearn.decomposition import PCA

    blocks = [real["X"], *(s["X"] for s in syn.values())]
    pca = PCA(n_components=min(30, real["X"].shape[0] - 1, real["X"].shape[1]),
              random_state=seed).fit(real["X"])
    Z = pca.transform(np.vstack(blocks))
    try:
        import umap

        emb = umap.UMAP(random_state=seed, n_neighbors=15, n_jobs=1).fit_transform(Z)
        method = "UMAP"
    except Exception:  # noqa: BLE001 - umap-learn missing or failing: PCA instead
        emb, method = Z[:, :2], "PCA"
    n_real = real["X"].shape[0]
    types = sorted(set(real["y"]))
    colors = {t: plt.get_cmap("tab10")(i % 10) for i, t in enumerate(types)}
    fig, axes = plt.subplots(1, len(syn), figsize=(5 * len(syn), 4.5), squeeze=False)
    start = n_real
    for ax, (aug, s) in zip(axes[0], syn.items(), strict=True):
        e = emb[start:start + s["X"].shape[0]]
        start += s["X"].shape[0]
        for t in types:
            m = real["y"] == t
            ax.scatter(*emb[:n_real][m & real["train"]].T, s=18, color=colors[t], edgecolor="k",
                       linewidth=0.6, label=f"{t} real (training)", zorder=3)
            ax.scatter(*emb[:n_real][m & ~real["train"]].T, s=14, color=colors[t], alpha=0.6,
                       label=f"{t} real (held out)", zorder=2)
            ax.scatter(*e[s["y"] == t].T, s=10, marker="x", color=colors[t], alpha=0.5,
                       label=f"{t} synthetic", zorder=1)
        ax.set_title(f"{aug}: synthetic (x) vs real (o) rare cells", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.suptitle(f"{name}, seed {seed}, {regime} ({method} of log-normalised cells; PCA fitted "
                 "on real cells)", fontsize=9)
    fig.tight_layout()
    fn = f"downstream_{name}_umap.png"
    fig.savefig(os.path.join(out_dir, fn), dpi=120, bbox_inches="tight")
    plt.close(fig)
    return fn


def geometry_rows(name, seed, regime, cache):
    """Where each augmenter's synthetic rare cells lie relative to the real ones (figure samples).

    Per rare type, log-normalised space: ``spread`` is the median distance of synthetic cells to
    the centroid of the type's training cells over the same for its held-out cells (1: real
    spread; below 1: pulled inward); ``reach`` is the median distance from a held-out cell to its
    nearest synthetic cell over that to its nearest training cell of the type (below 1: held-out
    cells find a synthetic neighbour before a real one, which is what a k-NN classifier uses).
    """
    from sklearn.neighbors import NearestNeighbors

    path = cache.path(name, seed, regime, "real", ext="npz")
    if not os.path.exists(path):
        return []
    real = np.load(path)
    types = {}  # per type: training cells, held-out cells, centroid, held-out->training distance
    for t in sorted(set(real["y"])):
        tr, held = (real["X"][(real["y"] == t) & m] for m in (real["train"], ~real["train"]))
        if len(held):
            d_real = np.median(NearestNeighbors(n_neighbors=1).fit(tr).kneighbors(held)[0])
            types[t] = (held, tr.mean(0), d_real)
    out = []
    for aug in FIG_AUGMENTERS:
        p = cache.path(name, seed, regime, _cache_name(aug), ext="npz")
        if not os.path.exists(p):
            continue
        syn = np.load(p)
        for t, (held, c, d_real) in types.items():
            s = syn["X"][syn["y"] == t]
            if len(s) == 0:
                continue
            spread = np.median(np.linalg.norm(s - c, axis=1)) / np.median(np.linalg.norm(held - c, axis=1))
            d_syn = np.median(NearestNeighbors(n_neighbors=1).fit(s).kneighbors(held)[0])
            out.append(dict(augmenter=aug, type=t, spread=spread, reach=d_syn / d_real))
    return out


def report(rows, args, command, summ, figs, fig_regime, dropped, wall, cache=None):
    lines = ["# Downstream rare-cell benchmark: classifiers trained on augmented data", ""]
    if args.quick:
        lines += [f"**QUICK MODE**: one data set, one seed, a tiny SCLD ({QUICK_SCLD}, "
                  f"{QUICK_SAMPLE_STEPS} sampling steps); a smoke test, not a measurement.", ""]
    lines += [f"Command: `{command}`", "", f"Machine: {machine()}", "",
              f"Total wall time of this run: {wall / 60:.1f} min (cached results take no time).", "",
              "## Protocol", "",
              "Stratified 70/30 train/test split per seed (`benchmarks/_common.rare_split`); regimes "
              "`natural` (no cap), `cap20`, `cap10` (the three rarest training types keep 20 / 10 "
              "training cells; the removed cells are used nowhere except as held-out cells for "
              "fidelity). The test cells are the same in every regime. Only the training split is "
              "augmented, every augmenter with imbalanced-learn's `sampling_strategy=\"auto\"` (every "
              "type raised to the size of the largest). RandomOverSampler and SCLD work on counts; "
              "SMOTE, ADASYN and BorderlineSMOTE interpolate log-normalised cells (k_neighbors = "
              "min(5, smallest training type - 1)). SCLD variants state their settings in full: "
              "`SCLD` is the defaults (`latent_smoothing=4`, plain conditional sampling w=1, no "
              "classifier guidance, no screening); `SCLD, CFG w=2` and `SCLD, all three guidances` "
              "sample the same fitted model with classifier-free guidance w=2, alone or with "
              "classifier guidance and screening. `SCLD revision 1` is the first defaults "
              "(`latent_smoothing=0`, all three guidances), with `SCLD revision 1, no "
              "post-guidance` (w=2 alone) and `SCLD revision 1, w=1` sampling its model, and `SCLD "
              "revision 1, gene-cell AE` fitted with `SCLD(autoencoder=CellAutoencoder("
              "dispersion=\"gene-cell\"))`. Each SCLD model is fitted once per (data set, seed, "
              "regime) and shared by its sampling variants. Every "
              "classifier sees log-normalised input (10,000 counts per cell, log1p), no other "
              "scaling: XGBoost (hist), logistic regression (max_iter=1000), random forest, "
              "5-nearest neighbours. Scores on the held-out real test cells; rare-type F1 is the "
              "mean F1 of the three rare types. Cells: mean±sd over seeds; best mean per column in "
              "bold.", ""]
    if any(dropped.values()):
        lines += ["Types dropped for having fewer than 2 cells: "
                  + "; ".join(f"{k}: {', '.join(v)}" for k, v in dropped.items() if v), ""]
    failed = _pick(rows, kind="score", status="failed")
    if failed:
        seen = sorted({(r["dataset"], r["seed"], r["regime"], r["augmenter"], r["error"]) for r in failed})
        lines += ["Failed augmentations (no scores):", ""]
        lines += [f"- {d}, seed {s}, {g}, {a}: {e}" for d, s, g, a, e in seen] + [""]

    lines += ["## Summary", "",
              f"Regime {fig_regime}, `SCLD` (the defaults). `beats`: SCLD's mean rare-type F1 is "
              "above the best imbalanced-learn baseline's (RandomOverSampler, SMOTE, ADASYN, "
              "BorderlineSMOTE; chosen per classifier); `matches`: below by at most that "
              "baseline's sd over seeds (0.01 with one seed); else `is below`. The AUC gap is "
              "SCLD's c2st AUC minus the reference AUC of real cells, averaged over rare types and "
              "seeds (0 = as indistinguishable as real cells).", ""]
    lines += [f"- {s}" for s in summary_lines(summ)] or ["- (no SCLD and baseline results)"]
    lines.append("")
    lines += regime_table(rows, args)
    lines += regime_table(rows, args, "SCLD revision 1")

    for name in args.datasets:
        lines += [f"## {name}", ""]
        for fn in figs.get(name, []):
            lines += [f"![{fn}]({fn})", ""]
        for regime in args.regimes:
            sc = _pick(rows, kind="score", dataset=name, regime=regime)
            if not sc:
                continue
            rare = sorted({t for r in sc for t in r.get("rare_types", [])})
            lines += [f"### {name}, {regime}", "", "Rare types: " + ", ".join(rare), ""]
            for metric, title in [("rare_f1", "rare-type F1"), ("macro_f1", "macro-F1"),
                                  ("balanced_accuracy", "balanced accuracy")]:
                body, means = [], {}
                for aug in args.augmenters:
                    cells = []
                    for clf in args.classifiers:
                        v = [r.get(metric) for r in _pick(sc, augmenter=aug, classifier=clf, status="ok")]
                        means[aug, clf] = _mean(v)
                        cells.append(_ms(v) or ("failed" if _pick(sc, augmenter=aug, classifier=clf)
                                                else ""))
                    body.append([aug, *cells])
                for j, clf in enumerate(args.classifiers):
                    col = [means[a, clf] for a in args.augmenters]
                    if np.isfinite(col).any():
                        best = int(np.nanargmax(col))
                        body[best][j + 1] = f"**{body[best][j + 1]}**"
                lines += [f"{title}:", "", *_table(["augmenter", *args.classifiers], body), ""]

        lines += [f"### {name}: fidelity of synthetic rare cells", "",
                  "c2st AUC of synthetic vs held-out real cells of the type, log-normalised space "
                  "(0.5 ideal), with the DCR ratio in brackets (median distance to the closest "
                  "training cell, synthetic over held-out real; ~1 healthy, 0 = copies). Reference: "
                  "held-out real cells vs the type's training cells (>= 10 of them), else two halves "
                  f"of the held-out cells; blank when fewer than {MIN_HELDOUT} held-out cells.", ""]
        augs = [a for a in args.augmenters if a != "none"]
        for regime in args.regimes:
            fr = _pick(rows, kind="fidelity", dataset=name, regime=regime)
            if not fr:
                continue
            body = []
            for t in sorted({r["type"] for r in fr}):
                ref = _pick(fr, augmenter="reference", type=t)
                cells = [regime, t, _ms([r["n_train"] for r in ref], 0),
                         _ms([r["n_heldout"] for r in ref], 0), _ms([r["c2st_auc"] for r in ref])]
                for a in augs:
                    fa = _pick(fr, augmenter=a, type=t)
                    auc, dcr = _ms([r["c2st_auc"] for r in fa]), _ms([r["dcr_ratio"] for r in fa], 2)
                    cells.append(f"{auc or 'n/a'} ({dcr})" if dcr else auc)
                body.append(cells)
            methods = sorted({r.get("reference_method", "") for r in fr if r["augmenter"] == "reference"})
            lines += _table(["regime", "type", "n train", "n held out", "reference AUC", *augs], body)
            lines += ["", f"Reference in {regime}: " + "; ".join(methods), ""]

        geo = geometry_rows(name, args.seeds[0], fig_regime, cache) if cache is not None else []
        if geo:
            lines += [f"### {name}: where the synthetic rare cells lie (seed {args.seeds[0]}, "
                      f"{fig_regime})", "",
                      "`spread`: median distance of synthetic cells to the centroid of the type's "
                      "training cells, over that of its held-out cells (1 = real spread, below 1 = "
                      "pulled inward). `reach`: median distance from a held-out cell to its nearest "
                      "synthetic cell, over that to its nearest training cell of the type (below 1: "
                      "the held-out cell meets a synthetic neighbour first, which is what a k-NN "
                      "classifier uses). From the cells of the UMAP figure (at most "
                      f"{MAX_SYN_EMBED} synthetic cells per type).", ""]
            lines += _table(["augmenter", "type", "spread", "reach"],
                            [[g["augmenter"], g["type"], f"{g['spread']:.2f}", f"{g['reach']:.2f}"]
                             for g in geo])
            lines += [""]
        lines += [f"### {name}: cost", "",
                  "Wall time in seconds, mean over seeds and regimes. Augmentation for SCLD variants "
                  "is sampling only; SCLD's fit (once per split, shared by the variants) is its own "
                  "column.", ""]
        body = []
        for aug in args.augmenters:
            sc = _pick(rows, kind="score", dataset=name, augmenter=aug)
            if not sc:
                continue
            first = _pick(sc, classifier=args.classifiers[0])
            fit = _ms([r.get("scld_fit_s") for r in first], 1) if aug in SCLD_VARIANTS else ""
            body.append([aug, _ms([r["n_synthetic"] for r in first], 0), fit,
                         _ms([r["aug_s"] for r in first], 2),
                         *(_ms([r.get("clf_fit_s") for r in _pick(sc, classifier=c, status="ok")], 2)
                           for c in args.classifiers)])
        lines += _table(["augmenter", "synthetic cells", "SCLD fit s", "augment s",
                         *(f"{c} fit s" for c in args.classifiers)], body) + [""]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", choices=DATASETS)
    p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument("--regimes", nargs="+", choices=list(REGIMES))
    p.add_argument("--augmenters", nargs="+", choices=AUGMENTERS)
    p.add_argument("--classifiers", nargs="+", choices=CLASSIFIERS)
    p.add_argument("--quick", action="store_true",
                   help="minutes: pbmc68k_reduced, seed 0, cap10, xgboost+logreg, 5 augmenters, "
                        "a tiny SCLD (explicit options still override the lists)")
    p.add_argument("--out-dir", default=DOCS)
    p.add_argument("--no-cache", action="store_true", help="recompute everything (cache is rewritten)")
    p.add_argument("--from-cache", action="store_true",
                   help="compute nothing: write the report from the cached results there are")
    p.add_argument("--device", default="auto", help="SCLD device (auto, cpu, cuda)")
    p.add_argument("--verbose", action="store_true", help="SCLD progress bars")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else dict(datasets=DATASETS, seeds=[0, 1, 2], regimes=list(REGIMES),
                                            augmenters=AUGMENTERS, classifiers=CLASSIFIERS)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, list(v))
    args.scld_params = dict(QUICK_SCLD) if args.quick else {}
    args.n_sample_steps = QUICK_SAMPLE_STEPS if args.quick else 50
    fig_regime = "cap10" if "cap10" in args.regimes else args.regimes[0]
    # the cache folder names the SCLD settings, so results of other settings are never mixed in
    config = json.dumps([args.scld_params, args.n_sample_steps], sort_keys=True)
    tag = ("quick-" if args.quick else "full-") + hashlib.md5(config.encode()).hexdigest()[:8]
    cache = Cache(tag, read=not args.no_cache)
    command = "SCAUG_DATA_DIR=../shared/data python benchmarks/downstream.py " + shlex.join(argv)

    t_start = time.perf_counter()
    rows, dropped = [], {}
    for name in args.datasets:
        X, y, dropped[name] = load(name)
        print(f"{name}: {X.shape[0]} cells x {X.shape[1]} genes, {len(np.unique(y))} types", flush=True)
        for seed in args.seeds:
            for regime in args.regimes:
                rows += run_unit(name, X, y, seed, regime, args, cache,
                                 fig_unit=(seed == args.seeds[0] and regime == fig_regime))
    wall = time.perf_counter() - t_start

    os.makedirs(args.out_dir, exist_ok=True)
    figs = figures(rows, args, cache, args.out_dir, fig_regime)
    summ = summary(rows, args, fig_regime)
    with open(os.path.join(args.out_dir, "downstream.md"), "w") as fh:
        fh.write(report(rows, args, command, summ, figs, fig_regime, dropped, wall, cache))
    with open(os.path.join(args.out_dir, "downstream.json"), "w") as fh:
        json.dump({"command": command, "machine": machine(), "quick": args.quick,
                   "args": {k: v for k, v in vars(args).items()}, "summary": summ, "rows": rows},
                  fh, indent=1, default=_json_default)
    print("\nSummary:")
    for line in summary_lines(summ) or ["(no SCLD and baseline results to compare)"]:
        print("  " + line)
    print(f"wrote {os.path.join(args.out_dir, 'downstream.md')}, downstream.json and "
          f"{sum(len(v) for v in figs.values())} figure(s) in {wall / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
