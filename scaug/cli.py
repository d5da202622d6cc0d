"""The ``scaug`` command: ``scaug demo`` compares augmenters on a real PBMC data set."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import __version__

#: tiny settings of ``--quick`` (smoke tests): seconds instead of minutes, meaningless scores
_QUICK_SCLD = {"n_latent": 4, "ae_hidden": (16,), "width": 16, "depth": 1, "diffusion_steps": 10}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaug",
        description="Rare-cell data augmentation for single-cell RNA-seq classifiers (SCLD).")
    parser.add_argument("--version", action="version", version=f"scaug {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser(
        "demo", help="cross-validate XGBoost with no augmentation, SMOTE and SCLD on PBMC cells",
        description="Cross-validate an imbalanced-learn pipeline [augmenter, NormalizeLog1p, "
                    "XGBClassifier] on scanpy's 700-cell PBMC data set (integer counts, 10 cell "
                    "types, the rarest with 8, 13 and 19 cells) with three augmenters: none, "
                    "SMOTE and SCLDOverSampler. Prints macro-F1 and the F1 of the three rarest "
                    "types, averaged over the folds. Takes about 3 minutes on 2 CPU cores.")
    demo.add_argument("--folds", type=_positive_int, default=3,
                      help="stratified cross-validation folds, at least 2 (default: 3)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the folds, the augmenters and XGBoost (default: 0)")
    demo.add_argument("--max-epochs", type=_positive_int, default=None,
                      help="cap on SCLD's training epochs (default: SCLD's tuned defaults)")
    demo.add_argument("--device", default="auto",
                      help="device for SCLD: auto, cpu, cuda or cuda:N (default: auto)")
    demo.add_argument("--threads", type=_positive_int, default=1,
                      help="torch CPU threads (default: 1; SCLD's small networks gain little "
                           "from more, and busy threads slow down shared machines)")
    demo.add_argument("--quick", action="store_true",
                      help="tiny models and few trees: a smoke test in seconds, not a benchmark")
    demo.add_argument("--quiet", action="store_true", help="no progress messages")
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None) -> int:
    """Run the ``scaug`` command line; ``argv`` defaults to ``sys.argv[1:]``.

    Returns the exit status (0 on success); argparse exits with status 2 on bad options.
    """
    args = _parser().parse_args(argv)
    return args.func(args)


# -- scaug demo ----------------------------------------------------------------------------------
def _augmenters(args, smote_k):
    from imblearn.over_sampling import SMOTE

    from .oversampler import SCLDOverSampler

    scld = dict(random_state=args.seed, device=args.device, max_epochs=args.max_epochs)
    if args.quick:
        scld.update(max_epochs=1, n_sample_steps=3, screening=False, scld_params=_QUICK_SCLD)
    return {
        "none": None,
        "SMOTE": SMOTE(k_neighbors=smote_k, random_state=args.seed),
        "SCLD": SCLDOverSampler(**scld),
    }


def _demo(args) -> int:
    if args.folds < 2:
        print("scaug demo: error: --folds must be at least 2", file=sys.stderr)
        return 2
    try:
        from xgboost import XGBClassifier
    except ImportError:
        print("scaug demo needs XGBoost: pip install 'scaug[xgboost]'", file=sys.stderr)
        return 1
    import torch
    from imblearn.pipeline import Pipeline
    from sklearn.base import clone
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import LabelEncoder

    from .datasets import pbmc68k_reduced
    from .preprocessing import NormalizeLog1p

    def say(message):
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    start = time.perf_counter()
    adata = pbmc68k_reduced()
    X = adata.X  # integer counts, CSR
    encoder = LabelEncoder()
    y = encoder.fit_transform(adata.obs["cell_type"].astype(str))  # XGBoost wants 0 .. K-1
    counts = np.bincount(y)
    if args.folds > counts.min():
        print(f"scaug demo: error: --folds must be at most {counts.min()}, the size of the "
              "rarest cell type", file=sys.stderr)
        return 2
    rare = np.argsort(counts, kind="stable")[:3]
    # SMOTE needs k_neighbors + 1 cells of the rarest type in every training fold
    smallest_train = counts.min() - int(np.ceil(counts.min() / args.folds))
    smote_k = max(1, min(3, smallest_train - 1))
    clf = XGBClassifier(n_estimators=5 if args.quick else 100, tree_method="hist", n_jobs=2,
                        random_state=args.seed)
    augmenters = _augmenters(args, smote_k)
    folds = list(StratifiedKFold(args.folds, shuffle=True, random_state=args.seed).split(X, y))
    say(f"scaug demo: {X.shape[0]} cells x {X.shape[1]} genes, {len(counts)} cell types; "
        f"{args.folds}-fold cross-validation of [augmenter, NormalizeLog1p, XGBClassifier]")

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    results = {}
    try:
        for name, augmenter in augmenters.items():
            macro, per_type, seconds = [], [], []
            for i, (train, test) in enumerate(folds, 1):
                say(f"  {name:<5} fold {i}/{args.folds} ...")
                steps = [("norm", NormalizeLog1p()), ("clf", clone(clf))]
                if augmenter is not None:
                    steps.insert(0, ("aug", clone(augmenter)))
                tic = time.perf_counter()
                pred = Pipeline(steps).fit(X[train], y[train]).predict(X[test])
                seconds.append(time.perf_counter() - tic)
                macro.append(f1_score(y[test], pred, average="macro", zero_division=0))
                per_type.append(f1_score(y[test], pred, labels=rare, average=None,
                                         zero_division=0))
                say(f"  {name:<5} fold {i}/{args.folds}: macro-F1 {macro[-1]:.3f} "
                    f"({seconds[-1]:.0f} s)")
            results[name] = (np.mean(macro), np.mean(per_type, axis=0), np.mean(seconds))
    finally:
        torch.set_num_threads(threads)

    headers = ["augmenter", "macro-F1"] + [
        f"F1 {encoder.classes_[c]} (n={counts[c]})" for c in rare] + ["fit s/fold"]
    rows = [[name, f"{m:.3f}", *(f"{v:.3f}" for v in types), f"{s:.1f}"]
            for name, (m, types, s) in results.items()]
    widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(headers)]
    print(f"\nMean over {args.folds} folds (seed {args.seed}"
          f"{', --quick: tiny models, scores not meaningful' if args.quick else ''}):")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    say(f"done in {time.perf_counter() - start:.0f} s")
    return 0
