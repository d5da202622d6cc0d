"""5-NN rare-type F1 against how far the rare types are oversampled: SCLD and SMOTE.

    SCAUG_DATA_DIR=../shared/data python benchmarks/knn_oversampling.py [--datasets paul15 bladder]

The downstream benchmark raises every type to the size of the largest (``sampling_strategy=
"auto"``), and there SCLD falls behind SMOTE for a k-nearest-neighbour classifier only. This
script asks whether the amount of synthetic cells is the cause: on the cap10 split of
``downstream.py`` (same seeds, same held-out cells), each type is raised to at least a fraction of
the largest type's size, for SCLD (revision 1 settings, the defaults when this was measured: no
latent smoothing, all three guidances; one fit per seed) and for SMOTE, and a 5-NN
classifier on log-normalised cells is scored on the held-out real cells. Nothing is tuned on the
test cells: every fraction is reported. Writes docs/knn_oversampling.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DOCS, machine, rare_split  # noqa: E402
from downstream import load, scores  # noqa: E402

from scaug import SCLD, SCLDOverSampler  # noqa: E402
from scaug.preprocessing import NormalizeLog1p  # noqa: E402

FRACTIONS = [1.0, 0.5, 0.2, 0.1, 0.05]
# revision 1, in full (docs/knn_oversampling.md was measured with it)
REVISION_1_FIT = dict(latent_smoothing=0.0)
REVISION_1_SAMPLE = dict(guidance_scale=2.0, classifier_scale=1.0, screening=True)


def run(name, seed):
    from imblearn.over_sampling import SMOTE
    from sklearn.neighbors import KNeighborsClassifier

    X, y, _ = load(name)
    train, test, rare = rare_split(y, seed=seed, cap=10)
    rare = [str(t) for t in rare]
    norm = NormalizeLog1p().fit(X[train])
    X_log = norm.transform(X)
    X_tr, y_tr = X[train], y[train]
    types, counts = np.unique(y_tr, return_counts=True)
    model = SCLD(random_state=seed, verbose=False, **REVISION_1_FIT).fit(X_tr, y_tr)
    k = min(5, int(counts.min()) - 1)

    def knn_f1(Xa, ya):
        pred = KNeighborsClassifier(n_neighbors=5).fit(Xa, ya).predict(X_log[test])
        return scores(y[test], pred, rare)["rare_f1"]

    out = {"none": knn_f1(X_log[train], y_tr)}
    for frac in FRACTIONS:
        target = {t: max(int(n), int(frac * counts.max())) for t, n in zip(types, counts, strict=True)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # screening fallbacks are reported by downstream.py
            Xs, ys = SCLDOverSampler(model=model, random_state=seed, sampling_strategy=target,
                                     **REVISION_1_SAMPLE).fit_resample(X_tr, y_tr)
        out[("SCLD", frac)] = knn_f1(norm.transform(Xs), ys)
        Xm, ym = SMOTE(k_neighbors=k, random_state=seed,
                       sampling_strategy=target).fit_resample(X_log[train], y_tr)
        out[("SMOTE", frac)] = knn_f1(Xm, ym)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["paul15", "bladder"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", default=os.path.join(DOCS, "knn_oversampling.md"))
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    lines = ["# k-NN and the amount of oversampling", "",
             f"Command: `SCAUG_DATA_DIR=../shared/data python benchmarks/knn_oversampling.py "
             f"--datasets {' '.join(args.datasets)} --seeds {' '.join(map(str, args.seeds))}`", "",
             f"Machine: {machine()}", "",
             "cap10 split of `downstream.py` (three rarest types keep 10 training cells; same "
             "held-out cells). Each type raised to at least `fraction` x the largest type's size "
             "(1.0 is imbalanced-learn's `\"auto\"`, what `downstream.py` uses). SCLD with the "
             "revision 1 settings (no latent smoothing; all three guidances). 5-NN on "
             "log-normalised cells; mean rare-type F1 on the held-out real cells, mean (min-max) "
             "over seeds.", ""]
    for name in args.datasets:
        res = [run(name, s) for s in args.seeds]
        for s, r in zip(args.seeds, res, strict=True):
            print(name, s, {str(k): round(v, 3) for k, v in r.items()}, flush=True)

        def cell(key, res=res):
            v = np.array([r[key] for r in res])
            return f"{v.mean():.3f} ({v.min():.2f}-{v.max():.2f})"

        lines += [f"## {name}", "", f"No augmentation: {cell('none')}", "",
                  "| fraction | SCLD | SMOTE |", "|---|---|---|"]
        lines += [f"| {f} | {cell(('SCLD', f))} | {cell(('SMOTE', f))} |" for f in FRACTIONS]
        lines.append("")
    lines.append(f"Wall time: {(time.perf_counter() - t0) / 60:.1f} min.")
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
