"""Why SCLD's cells lower a 5-NN classifier's rare-type F1, and how much of them to add.

At parity (every type raised to the largest type's size, imbalanced-learn's ``"auto"``), SCLD's
synthetic cells lowered 5-NN rare-type F1 on every data set of the downstream benchmark, while
SMOTE's raised it. This experiment looks at the neighbours: for each held-out cell of a rare
type, which of its 5 nearest training cells (real or synthetic) are synthetic cells of its own
type, real cells of its type, or cells of other types; for the held-out cells of the other types,
how many are called rare (false positives) and how many synthetic cells of the rare types sit
among their neighbours; and how far a held-out rare cell is from the nearest synthetic cell of its type,
relative to the nearest real training cell of its type.

Set-up: the downstream benchmark's cap10 split (``_common.rare_split``: stratified 70/30, the
three rarest types keep 10 training cells), 2,000 genes, everything log-normalised, 5-NN
(scikit-learn's ``KNeighborsClassifier(5)``) on the training cells plus the synthetic ones, as in
``downstream.py``. Arms: no augmentation, SMOTE at parity, the latent Gaussian at parity (the
cheap latent baseline through the same autoencoder), and SCLD (the suite's ``SCLD`` setting) at
the amounts ``AMOUNTS`` of the largest type's size.

Seeds and data sets: development run on paul15 and cbmc, seeds 0-2, where an amount for k-NN would
be chosen; reporting run on bladder (a reporting-only data set), seeds 10-14. Both in one report:

    SCAUG_DATA_DIR=../shared/data python benchmarks/knn_neighbours.py          # both runs
    SCAUG_DATA_DIR=../shared/data python benchmarks/knn_neighbours.py --quick  # smoke test

writes knn_neighbours.md and knn_neighbours.json into --out-dir (default docs/).
"""

from __future__ import annotations

import os
import sys

import numpy as np
from sklearn.neighbors import KNeighborsClassifier

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _suite as S  # noqa: E402
from _common import load_counts, rare_split  # noqa: E402

AMOUNTS = (1.0, 0.2, 0.05)
RUNS = [("Development (where an amount would be chosen)", ("paul15", "cbmc"), S.DEV_SEEDS),
        ("Reporting (never used for a choice)", ("bladder",), S.REPORT_SEEDS)]
QUICK_RUNS = [("quick", ("paul15",), (0,))]


def arms():
    """``(arm name, registry setting, amount)``."""
    out = [("none", "none", 1.0), ("SMOTE at parity", "SMOTE", 1.0),
           ("latent Gaussian at parity", "latent Gaussian", 1.0)]
    return out + [(f"SCLD at {a:g} of the largest type" if a != 1.0 else "SCLD at parity", "SCLD", a)
                  for a in AMOUNTS]


def neighbour_rows(X_fit, y_fit, synthetic, X_test, y_test, rare):
    """Scores and the neighbourhood figures of one arm (means over the rare types)."""
    knn = KNeighborsClassifier(5).fit(X_fit, y_fit)
    pred = knn.predict(X_test)
    _, nn = knn.kneighbors(X_test)
    out = {"precision": [], "recall": [], "f1": [], "syn_own": [], "real_own": [], "other": [],
           "dist_ratio": []}
    for t in rare:
        held = y_test == t
        tp = float(np.sum(pred[held] == t))
        precision = tp / max(np.sum(pred == t), 1)
        recall = tp / held.sum()
        out["precision"].append(precision)
        out["recall"].append(recall)
        out["f1"].append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
        own = y_fit[nn[held]] == t
        out["syn_own"].append(float((own & synthetic[nn[held]]).mean()))
        out["real_own"].append(float((own & ~synthetic[nn[held]]).mean()))
        out["other"].append(float((~own).mean()))
        syn_t, real_t = synthetic & (y_fit == t), ~synthetic & (y_fit == t)
        if syn_t.any():
            d_syn = _nearest(X_test[held], X_fit[syn_t])
            d_real = _nearest(X_test[held], X_fit[real_t])
            out["dist_ratio"].append(float(np.median(d_syn / d_real)))
    row = {k: float(np.mean(v)) if v else float("nan") for k, v in out.items()}
    common = ~np.isin(y_test, rare)
    row["false_rare"] = float(np.isin(pred[common], rare).mean())
    rare_synthetic = synthetic & np.isin(y_fit, rare)
    row["syn_among_common"] = float(rare_synthetic[nn[common]].mean())
    return row


def _nearest(A, B):
    from sklearn.metrics import pairwise_distances

    return pairwise_distances(A, B).min(1)


def run_unit(dataset, seed, quick, verbose):
    X, y = load_counts(dataset)
    types, counts = np.unique(y, return_counts=True)
    keep = ~np.isin(y, types[counts < 2])
    X, y = X[keep], y[keep]
    train, test, rare = rare_split(y, seed=seed, cap=10, test_size=0.3)
    X_tr, y_tr = X[train], y[train]
    X_tr_log, X_test_log = S.log_norm(X_tr), S.log_norm(X[test])
    fits = S.Fits(X_tr, y_tr, seed, "cpu", verbose=verbose)
    rows = []
    for arm, name, amount in arms():
        s = S.setting(name, quick)
        syn = S.synthesize(name, s, fits, X_tr, y_tr, S.target_counts(y_tr, amount), seed)
        X_fit = S.stack(X_tr_log, S.synthetic_log(syn))
        y_fit = np.concatenate([y_tr, syn["y"]])
        synthetic = np.r_[np.zeros(len(y_tr), bool), np.ones(len(syn["y"]), bool)]
        row = neighbour_rows(X_fit, y_fit, synthetic, X_test_log, y[test], rare)
        rows.append(dict(row, dataset=dataset, seed=seed, arm=arm, n_synthetic=len(syn["y"])))
        print(f"{dataset} seed {seed} {arm:34} F1 {row['f1']:.3f} P {row['precision']:.3f} "
              f"R {row['recall']:.3f} syn-own {row['syn_own']:.2f} false-rare "
              f"{row['false_rare']:.3f} dist ratio {row['dist_ratio']:.2f}", flush=True)
    return rows


COLUMNS = [("f1", "rare F1"), ("precision", "precision"), ("recall", "recall"),
           ("syn_own", "NN: synthetic, own type"), ("real_own", "NN: real, own type"),
           ("other", "NN: other types"), ("dist_ratio", "nearest synthetic / nearest real"),
           ("false_rare", "other cells called rare"),
           ("syn_among_common", "rare synthetic among other cells' NN")]


def tables(rows, datasets, seeds):
    lines = []
    for d in datasets:
        mine = [r for r in rows if r["dataset"] == d and r["seed"] in seeds]
        if not mine:
            continue
        lines += [f"### {d}", "", "| arm | " + " | ".join(c for _, c in COLUMNS) + " |",
                  "|---|" + "---|" * len(COLUMNS)]
        for arm, _, _ in arms():
            vals = [r for r in mine if r["arm"] == arm]
            lines.append(f"| {arm} | " + " | ".join(
                S.mean_sd([r[k] for r in vals], 2) for k, _ in COLUMNS) + " |")
        f1 = {arm: {r["seed"]: r["f1"] for r in mine if r["arm"] == arm} for arm, _, _ in arms()}
        for against in ("SCLD at parity", "none"):
            lines += ["", f"Rare-type F1 minus {against}'s, paired by seed (95 % interval):", ""]
            lines += [f"- {arm}: {S.fmt_diff(S.paired(f1[arm], f1[against]))}"
                      for arm in f1 if arm != against]
        lines.append("")
    return lines


def run(quick, verbose):
    runs = QUICK_RUNS if quick else RUNS
    rows = [r for _, datasets, seeds in runs for d in datasets for seed in seeds
            for r in run_unit(d, seed, quick, verbose)]
    return {"runs": runs, "amounts": AMOUNTS, "rows": rows}


def render(payload):
    lines = [*S.intro("k-NN and synthetic cells: the neighbours of held-out rare cells",
                      "knn_neighbours.py", payload),
             "Means ± sd over seeds, of the means over the three rare types. `NN:` columns: the "
             "share of a held-out rare cell's 5 nearest neighbours of each kind.", ""]
    for title, datasets, seeds in payload["runs"]:
        lines += [f"## {title}: {', '.join(datasets)}, seeds {list(seeds)}", "",
                  *tables(payload["rows"], datasets, seeds)]
    return "\n".join(lines)


if __name__ == "__main__":
    S.one_report_main(__doc__, "knn_neighbours", run, render)
