"""Downstream: do classifiers trained on augmented cells recognise rare types better?

Per data set, seed and regime: a stratified 70/30 train/test split (``_common.rare_split``); in
``cap20`` and ``cap10`` the three rarest training types keep 20 or 10 training cells, ``natural``
keeps them all, and the test cells are the same in every regime. Only the training split is
augmented, each type raised to the size of the largest (imbalanced-learn's ``"auto"``, or the
``amount`` an augmenter states). imbalanced-learn's interpolating samplers work on log-normalised
cells (``k_neighbors = min(5, smallest type - 1)``), RandomOverSampler, the latent baselines and
SCLD on counts. Every classifier sees log-normalised cells (10,000 per cell, log1p) and is scored
on the held-out real test cells: rare-type F1 (mean F1 of the three rarest types), macro-F1,
balanced accuracy, and the wall time of augmenting and of fitting the classifier. Unless
``--regimes`` and ``--classifiers`` say otherwise, a run covers the headline regime ``cap10`` with
XGBoost, logistic regression and 5-nearest neighbours.

    SCAUG_DATA_DIR=../shared/data python benchmarks/run.py --experiments downstream [--quick]

Writes ``downstream/downstream.md`` and ``.json`` into the output folder.
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _suite as S  # noqa: E402
from _common import THREADS, load_counts, machine, rare_split  # noqa: E402

NAME = "downstream"
REGIMES = {"natural": None, "cap20": 20, "cap10": 10}
HEADLINE = "cap10"
BEST = "the best imbalanced-learn sampler"
SPLIT = dict(test_size=0.3, n_rare=3, n_top_genes=2000)
#: classifier -> (constructor name, settings); a seed is added where the classifier takes one
CLASSIFIERS = {
    "xgboost": ("xgboost.XGBClassifier", dict(tree_method="hist", n_jobs=THREADS)),
    "logreg": ("sklearn.linear_model.LogisticRegression", dict(max_iter=1000)),
    "random_forest": ("sklearn.ensemble.RandomForestClassifier", dict(n_jobs=THREADS)),
    "knn": ("sklearn.neighbors.KNeighborsClassifier", dict(n_neighbors=5)),
}
QUICK_DATASETS = ("pbmc68k_reduced",)
#: the classifiers a run uses unless --classifiers says otherwise (random forest on request: it
#: ranked like XGBoost in every earlier run and costs as much)
DEFAULT_CLASSIFIERS = ("xgboost", "logreg", "knn")
#: rough seconds on one core of the 2-core machine, for the estimate: the medians of the
#: reporting-seed runs on bladder, cbmc and pbmc68k_reduced (their JSON: ae_fit_s, fit_s, ...)
COST = dict(ae_fit=25.0, diffusion_fit=45.0, sample_per_cell=1e-3,
            classify_per_cell=dict(xgboost=8e-3, logreg=7e-4, random_forest=2e-3, knn=1e-4))


def configure(args) -> None:
    S.resolve_mode(args, QUICK_DATASETS)
    args.classifiers = list(args.classifiers
                            or (["logreg", "knn"] if args.quick else DEFAULT_CLASSIFIERS))
    # the headline regime unless asked: cap20 and natural cost as much again each
    args.regimes = list(args.regimes or [HEADLINE])
    unknown = sorted(set(args.classifiers) - set(CLASSIFIERS))
    if unknown:
        raise SystemExit(f"unknown classifier(s) {unknown}; they are {list(CLASSIFIERS)}")
    args.augmenters = S.drop_unavailable([a for a in args.augmenters
                                          if not S.REGISTRY[a].get("unlabelled")])


def make_classifier(name, seed):
    import importlib

    path, params = CLASSIFIERS[name]
    module, cls = path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), cls)
    if name in ("xgboost", "random_forest"):
        params = dict(params, random_state=seed)
    return cls(**params)


_DATA = {}


def load(name):
    """Counts and labels; types of fewer than 2 cells are dropped (a stratified split needs 2)."""
    if name not in _DATA:
        X, y = load_counts(name, SPLIT["n_top_genes"])
        types, counts = np.unique(y, return_counts=True)
        keep = ~np.isin(y, types[counts < 2])
        _DATA[name] = X[keep], y[keep]
    return _DATA[name]


def units(args):
    return [(d, s, g) for d in args.datasets for s in args.seeds for g in args.regimes]


def key(unit, aug, clf, args):
    d, s, g = unit
    return dict(experiment=NAME, dataset=d, seed=s, regime=g, cap=REGIMES[g], split=SPLIT,
                augmenter=S.setting(aug, args.mode == "quick"), classifier=CLASSIFIERS[clf])


def missing(unit, args, cache):
    return [(a, c) for a in args.augmenters for c in args.classifiers
            if cache.get(key(unit, a, c, args)) is None]


def estimate(unit, todo, args) -> float:
    d, s, g = unit
    _, y = load(d)
    train, _, _ = rare_split(y, seed=s, cap=REGIMES[g], test_size=SPLIT["test_size"])
    n_aug = sum(S.target_counts(y[train], 1.0).values()) + len(train)
    augs = {a for a, _ in todo}
    kinds = {S.REGISTRY[a]["kind"] for a in augs}
    fits = (COST["ae_fit"] if kinds & {"latent", "scld"} else 0.0)
    fits += COST["diffusion_fit"] * len({a for a in augs if S.REGISTRY[a]["kind"] == "scld"})
    return fits + sum(COST["sample_per_cell"] * n_aug + COST["classify_per_cell"][c] * n_aug
                      for _, c in todo)


def scores(y_true, y_pred, rare):
    from sklearn.metrics import balanced_accuracy_score, f1_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per = f1_score(y_true, y_pred, labels=rare, average=None, zero_division=0)
        return dict(macro_f1=float(f1_score(y_true, y_pred, labels=np.unique(y_true),
                                            average="macro", zero_division=0)),
                    rare_f1=float(np.mean(per)),
                    rare_f1_per_type={str(t): float(f) for t, f in zip(rare, per, strict=True)},
                    balanced_accuracy=float(balanced_accuracy_score(y_true, y_pred)))


def run_unit(unit, args, cache):
    from sklearn.preprocessing import LabelEncoder

    todo = missing(unit, args, cache)
    done = [cache.get(key(unit, a, c, args)) for a in args.augmenters for c in args.classifiers
            if (a, c) not in todo]
    if not todo or args.from_cache:
        return done
    d, seed, g = unit
    X, y = load(d)
    train, test, rare = rare_split(y, seed=seed, cap=REGIMES[g], test_size=SPLIT["test_size"])
    rare = [str(t) for t in rare]
    X_tr, y_tr = X[train], y[train]
    X_tr_log, X_test_log = S.log_norm(X_tr), S.log_norm(X[test])
    enc = LabelEncoder().fit(y)
    fits = S.Fits(X_tr, y_tr, seed, args.device, verbose=args.verbose)
    rows = list(done)
    print(f"[{d} seed={seed} {g}] {len(train)} training / {len(test)} test cells; rare: "
          + ", ".join(f"{t} ({(y_tr == t).sum()})" for t in rare), flush=True)
    for aug in args.augmenters:
        clfs = [c for a, c in todo if a == aug]
        if not clfs:
            continue
        s = S.setting(aug, args.mode == "quick")
        base = dict(dataset=d, seed=seed, regime=g, augmenter=aug, rare_types=rare,
                    n_train=len(train), machine=machine())
        try:
            syn = S.synthesize(aug, s, fits, X_tr, y_tr, S.target_counts(y_tr, s.get("amount", 1.0)),
                               seed)
            syn_log = S.synthetic_log(syn)
            X_aug = S.stack(X_tr_log, syn_log)
            y_aug = np.concatenate([y_tr, syn["y"]])
            base.update(status="ok", error=None, n_synthetic=len(syn["y"]),
                        ae_fit_s=syn["ae_fit_s"], fit_s=syn["fit_s"], sample_s=syn["sample_s"],
                        augment_s=syn["ae_fit_s"] + syn["fit_s"] + syn["sample_s"],
                        warnings=syn["warnings"], **syn.get("diagnostics", {}))
        except Exception as err:  # noqa: BLE001 - e.g. ADASYN without neighbours: a row says so
            X_aug = None
            base.update(status="failed", error=f"{type(err).__name__}: {err}", n_synthetic=0)
            print(f"  {aug}: FAILED ({base['error']})", flush=True)
        for clf_name in clfs:
            row = dict(base, classifier=clf_name, compute_s=fits.fresh())
            if X_aug is not None:
                clf = make_classifier(clf_name, seed)
                t0 = time.perf_counter()
                clf.fit(X_aug, enc.transform(y_aug))
                pred = enc.inverse_transform(np.asarray(clf.predict(X_test_log)).astype(int))
                row["clf_s"] = time.perf_counter() - t0
                row["compute_s"] += row["clf_s"] + (row["sample_s"] if clf_name == clfs[0] else 0)
                row.update(scores(y[test], pred, rare))
                print(f"  {aug:<34} {clf_name:<13} rare F1 {row['rare_f1']:.3f}  macro F1 "
                      f"{row['macro_f1']:.3f}  (augment {row['augment_s']:.1f} s, classify "
                      f"{row['clf_s']:.1f} s)", flush=True)
            cache.put(key(unit, aug, clf_name, args), row)
            rows.append(row)
    return rows


# -- the report ---------------------------------------------------------------------------------
def _by_seed(rows, metric="rare_f1", **kw):
    return {r["seed"]: r[metric] for r in S.pick(rows, status="ok", **kw) if metric in r}


def comparisons(rows, args, regime, reference="SCLD"):
    """Per (data set, classifier): ``reference`` minus each comparator, paired over seeds.

    The best imbalanced-learn sampler is picked per (data set, classifier) by its mean over the
    seeds of this report: the strongest comparator, chosen after the fact (in its favour).
    """
    out = []
    for d in args.datasets:
        for c in args.classifiers:
            mine = _by_seed(rows, dataset=d, regime=regime, classifier=c, augmenter=reference)
            if not mine:
                continue
            others = {a: _by_seed(rows, dataset=d, regime=regime, classifier=c, augmenter=a)
                      for a in args.augmenters if a != reference}
            others = {a: v for a, v in others.items() if v}
            imb = {a: v for a, v in others.items() if a in S.IMBLEARN}
            best = max(imb, key=lambda a: np.mean(list(imb[a].values()))) if imb else None
            if best:
                others = {BEST: imb[best], **others}
            for a, v in others.items():
                out.append(dict(dataset=d, classifier=c, regime=regime, comparator=a,
                                best=best if a == BEST else None,
                                f1=float(np.mean(list(mine.values()))),
                                comparator_f1=float(np.mean(list(v.values()))),
                                **S.paired(mine, v)))
    return out


def _verdicts(comps, comparator, classifiers):
    lines = []
    for c in classifiers:
        got = [x for x in comps if x["classifier"] == c and x["comparator"] == comparator]
        if got:
            said = {v: [x["dataset"] for x in got if x["verdict"] == v]
                    for v in ("win", "loss", "no difference shown", "n/a")}
            lines.append(f"  - {c}, {len(got)} data set(s): " + "; ".join(
                f"{v if v != 'n/a' else 'no interval (one seed)'} {len(ds)}"
                + (f" ({', '.join(ds)})" if ds else "") for v, ds in said.items()
                if ds or v != "n/a"))
    return lines


def timing_ratio(rows, args, a="SCLD", b="SMOTE"):
    """Per classifier: (augment + classify) of ``a`` over that of ``b`` on the same split."""
    out = []
    for c in args.classifiers:
        ratios = []
        for r in S.pick(rows, augmenter=a, classifier=c, status="ok"):
            o = S.pick(rows, augmenter=b, classifier=c, status="ok", dataset=r["dataset"],
                       seed=r["seed"], regime=r["regime"])
            if o and "clf_s" in r and "clf_s" in o[0]:
                ratios.append((r["augment_s"] + r["clf_s"]) / (o[0]["augment_s"] + o[0]["clf_s"]))
        if ratios:
            out.append([c, len(ratios), f"{np.median(ratios):.1f}",
                        f"{min(ratios):.1f}-{max(ratios):.1f}"])
    return out


def render(rows, args, prov):
    lines = ["# Downstream rare-cell benchmark: classifiers trained on augmented data"
             + S.peers_in_title(args.augmenters), "",
             *S.provenance_lines(prov), "## Protocol", "", __doc__.split("\n\n")[1].replace("\n", " "),
             "", "Differences are paired over seeds (the same split for both augmenters) with a "
             "95 % paired-t interval; a **win** or a **loss** is counted only when the interval "
             "excludes zero. The best imbalanced-learn sampler (RandomOverSampler, SMOTE, ADASYN, "
             "BorderlineSMOTE) is picked per data set and classifier by its mean over these seeds, "
             "after the fact, which favours it.", ""]
    failed = sorted({(r["dataset"], r["seed"], r["regime"], r["augmenter"], r["error"])
                     for r in rows if r.get("status") == "failed"})
    if failed:
        lines += ["Failed augmentations (no scores):", "", *(f"- {d}, seed {s}, {g}, {a}: {e}"
                                                              for d, s, g, a, e in failed), ""]
    lines += ["## Summary", ""]
    all_comps = []
    for regime in [g for g in REGIMES if g in args.regimes]:
        comps = comparisons(rows, args, regime)
        all_comps += comps
        if not comps:
            continue
        lines += [f"### {regime}: `SCLD` rare-type F1 against each comparator", ""]
        for other in (BEST, *[a for a in args.augmenters if a != "SCLD" and a not in S.IMBLEARN]):
            lines += [f"- against {other}:", *_verdicts(comps, other, args.classifiers)]
        # every comparator but the single imbalanced-learn samplers (their best stands for them)
        shown = [x for x in comps if x["comparator"] not in S.IMBLEARN]
        body = [[x["dataset"], x["classifier"],
                 f"{x['comparator']} ({x['best']})" if x["best"] else x["comparator"],
                 f"{x['f1']:.3f}", f"{x['comparator_f1']:.3f}", S.fmt_diff(x), x["verdict"]]
                for x in shown]
        lines += ["", *S.table(["data set", "classifier", "comparator", "SCLD", "comparator F1",
                                "SCLD minus comparator [95 % CI]", "verdict"], body)]
    ratio = timing_ratio(rows, args)
    if ratio:
        lines += ["## Cost: SCLD against SMOTE", "", "Wall time of augmenting (SCLD: its "
                  "autoencoder fit, diffusion fit and sampling) plus fitting and applying the "
                  "classifier, SCLD over SMOTE on the same split; median and range over splits.",
                  "", *S.table(["classifier", "splits", "median ratio", "range"], ratio)]
    lines += _cost_table(rows, args)
    lines += _prior_table(rows, args)
    lines += _detail_tables(rows, args)
    lines += S.settings_lines(prov)
    return [("downstream/downstream", lines, {"provenance": prov, "comparisons": all_comps,
                                              "rows": rows})]


def _prior_table(rows, args):
    """How label-specific scANVI's prior is: the share of the latents drawn for a type that
    scANVI's own classifier gives that type (rare types, then all types raised)."""
    body = []
    for d in args.datasets:
        got = S.pick(rows, dataset=d, augmenter="scANVI", classifier=args.classifiers[0],
                     status="ok")
        got = [r for r in got if "prior_label_agreement" in r]
        if got:
            rare = [np.mean([v for t, v in r["prior_label_agreement"].items()
                             if t in r["rare_types"]]) for r in got]
            every = [np.mean(list(r["prior_label_agreement"].values())) for r in got]
            body.append([d, len(got), S.mean_sd(rare), S.mean_sd(every)])
    return ["## scANVI's prior: are its cells of the label they were drawn for?", "",
            "Share of the latents drawn from scANVI's prior for a type that scANVI's own "
            "classifier assigns to that type, mean±sd over seeds (1: the prior is specific to "
            "the label).", "", *S.table(["data set", "seeds", "rare types", "every type raised"],
                                        body)] if body else []


def _cost_table(rows, args):
    body = []
    for a in args.augmenters:
        got = S.pick(rows, augmenter=a, classifier=args.classifiers[0], status="ok")
        if got:
            body.append([a, S.mean_sd([r["n_synthetic"] for r in got], 0),
                         *(S.mean_sd([r.get(k) for r in got], 1)
                           for k in ("ae_fit_s", "fit_s", "sample_s", "augment_s"))])
    return ["## Cost of each augmenter", "", "Seconds, mean±sd over splits (a fit shared by "
            "several augmenters is counted in full for each). The latent baselines use SCLD's "
            "autoencoder fit and nothing else; for scVI and scANVI the two fit columns are the "
            "scVI fit and the scANVI fit (scANVI starts from that scVI).", "",
            *S.table(["augmenter", "synthetic cells", "autoencoder fit s", "diffusion fit s",
                      "sampling s", "augment s"], body)] if body else []


def _detail_tables(rows, args):
    lines = []
    for d in args.datasets:
        for g in [g for g in REGIMES if g in args.regimes]:
            sc = S.pick(rows, dataset=d, regime=g)
            if not sc:
                continue
            rare = sorted({t for r in sc for t in r.get("rare_types", [])})
            lines += [f"## {d}, {g}", "", "Rare types: " + ", ".join(rare), ""]
            for metric, title in (("rare_f1", "rare-type F1"), ("macro_f1", "macro-F1")):
                body = [[a, *(S.mean_sd([r.get(metric) for r in S.pick(sc, augmenter=a, classifier=c,
                                                                      status="ok")])
                              for c in args.classifiers)] for a in args.augmenters]
                lines += [f"{title}, mean±sd over seeds:", "", *S.table(["augmenter", *args.classifiers],
                                                                         body)]
    return lines


if __name__ == "__main__":  # the same as run.py --experiments downstream
    import run

    sys.exit(run.main(["--experiments", NAME, *sys.argv[1:]]))
