"""The ``scaug`` command: augment, fit, sample and inspect models on ``.h5ad`` files.

``scaug augment``, ``fit``, ``sample`` and ``info`` work on AnnData files through
:mod:`scaug.tl`; ``scaug evaluate`` runs scaug's evaluation protocol on a user's own data (does
augmentation help their classifier, and which sampler?); ``scaug demo`` compares augmenters on a
real PBMC data set and ``scaug benchmark`` runs the benchmark suite of a source checkout. Only
argparse is imported before the arguments are read, so ``scaug --help`` answers at once; torch,
anndata and scanpy load when a command runs.

A user mistake (missing file, unknown key, layer or type, bad value, an output that exists
without ``--overwrite``, ``--device cuda`` without a GPU) prints one line on stderr and exits with
status 2 before any training; outputs are written atomically (a temporary file in the same folder,
then renamed), so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from ._version import __version__

#: tiny settings of ``--quick`` (smoke tests): seconds instead of minutes, meaningless scores
_QUICK_SCLD = {"n_latent": 4, "ae_hidden": (16,), "width": 16, "depth": 1, "diffusion_steps": 10}
_QUICK_RUN = {"max_epochs": 1, "n_sample_steps": 3}
_STRATEGIES = ("auto", "minority", "not minority", "not majority", "all")


class UserError(Exception):
    """A mistake in the command line or its files: reported as one line, without a traceback."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _type_count(text: str) -> tuple[str, int]:
    """``TYPE=N`` (the type may itself hold '='; N is the part after the last one)."""
    label, sep, count = text.rpartition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"expected TYPE=N, got {text!r}")
    try:
        n = int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected TYPE=N with an integer N, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected TYPE=N with N >= 0, got {text!r}")
    return label, n


def _common(p, *, seed=True, device=True, train=False, output=None):
    if output:
        p.add_argument("-o", "--output", required=True, metavar="OUT", help=output)
        p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    if train:
        p.add_argument("--layer", default=None,
                       help="layer holding the counts (default: X)")
        p.add_argument("--max-epochs", type=_positive_int, default=None,
                       help="cap on the epochs of every training stage (default: SCLD's tuned "
                            "defaults)")
        p.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # smoke tests
    if seed:
        p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    if device:
        p.add_argument("--device", default="auto",
                       help="auto, cpu, cuda or cuda:N (default: auto: a GPU if torch sees one)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaug",
        description="Rare-cell data augmentation for single-cell RNA-seq classifiers (SCLD).",
        epilog="Run 'scaug COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"scaug {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    aug = sub.add_parser(
        "augment", help="add synthetic cells of the rare types to an .h5ad file",
        description="Fit SCLD on the cells of IN (or reuse --model) and write OUT: the original "
                    "cells, then synthetic ones of the types --strategy asks for, marked True in "
                    "obs['synthetic']. Counts are read from --layer (or X) and the synthetic "
                    "counts written there; other per-cell matrices are dropped (see "
                    "scaug.tl.augment). Cells with a missing label are used unlabelled.")
    aug.add_argument("input", metavar="IN", help="input .h5ad file (integer counts)")
    aug.add_argument("--labels-key", required=True, metavar="KEY",
                     help="obs column with the cell types")
    aug.add_argument("--strategy", nargs="+", default=["auto"], metavar="S",
                     help="auto (the default), minority, not-minority, not-majority or all: "
                          "bring those types up to the size of the largest; or TYPE=N ...: "
                          "N cells of TYPE after augmentation")
    aug.add_argument("--model", default=None, metavar="PATH",
                     help="a saved SCLD to reuse without training (or a saved CellAutoencoder "
                          "to train on)")
    aug.add_argument("--key-added", default="synthetic", metavar="KEY",
                     help="obs column marking synthetic cells (default: synthetic)")
    aug.add_argument("--batch-key", nargs="+", default=None, metavar="KEY",
                     help="obs column(s) with the batch, donor or sample: each synthetic cell is "
                          "generated within a batch, in the proportions of its type's real "
                          "cells, and gets it in obs[KEY] (default: none, cells averaged over "
                          "batches)")
    _common(aug, train=True, output="output .h5ad file")
    aug.set_defaults(func=_augment)

    fit = sub.add_parser(
        "fit", help="fit an SCLD model on an .h5ad file and save it",
        description="Fit SCLD on the counts of IN and save the model (with its gene names) to "
                    "MODEL, for 'scaug sample', 'scaug augment --model' or scaug.SCLD.load.")
    fit.add_argument("input", metavar="IN", help="input .h5ad file (integer counts)")
    fit.add_argument("--labels-key", default=None, metavar="KEY",
                     help="obs column with the cell types (default: none, holistic synthesis "
                          "only); cells with a missing label are used unlabelled")
    fit.add_argument("--batch-key", nargs="+", default=None, metavar="KEY",
                     help="obs column(s) with the batch, donor or sample: the model learns the "
                          "types within each (default: none)")
    _common(fit, train=True, output="file to save the model to, e.g. model.scld")
    fit.set_defaults(func=_fit)

    sample = sub.add_parser(
        "sample", help="synthesize cells with a saved model into an .h5ad file",
        description="Load MODEL and write OUT: synthetic cells of the types asked, their type in "
                    "obs[--labels-key], genes named as when the model was fitted.")
    sample.add_argument("model", metavar="MODEL", help="a model saved by 'scaug fit' or SCLD.save")
    sample.add_argument("--n", nargs="+", required=True, metavar="TYPE=N",
                        help="cells to synthesize: TYPE=N for each type, or one number N for N "
                             "cells in the training proportions of the types")
    sample.add_argument("--labels-key", default="cell_type", metavar="KEY",
                        help="obs column for the types (default: cell_type)")
    _common(sample, output="output .h5ad file")
    sample.set_defaults(func=_sample)

    info = sub.add_parser(
        "info", help="describe a saved model: types, genes, format, settings",
        description="Print the cell types of a saved SCLD with their training counts, its genes, "
                    "the file format version and the model's settings.")
    info.add_argument("model", metavar="MODEL")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=_info)

    demo = sub.add_parser(
        "demo", help="cross-validate XGBoost with no augmentation, SMOTE and SCLD on PBMC cells",
        description="Cross-validate an imbalanced-learn pipeline [augmenter, NormalizeLog1p, "
                    "XGBClassifier] on scanpy's 700-cell PBMC data set (integer counts, 10 cell "
                    "types, the rarest with 8, 13 and 19 cells) with three augmenters: none, "
                    "SMOTE and SCLDOverSampler. Prints macro-F1 and the F1 of the three rarest "
                    "types, averaged over the folds. Takes about 2 minutes on 2 CPU cores.")
    demo.add_argument("--folds", type=_positive_int, default=3,
                      help="stratified cross-validation folds, at least 2 (default: 3)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the folds, the augmenters and XGBoost (default: 0)")
    demo.add_argument("--max-epochs", type=_positive_int, default=None,
                      help="cap on SCLD's training epochs (default: SCLD's tuned defaults)")
    demo.add_argument("--device", default="auto",
                      help="device for SCLD: auto, cpu, cuda or cuda:N (default: auto)")
    demo.add_argument("--jobs", type=_positive_int, default=2,
                      help="folds fitted at the same time, in separate processes (default: 2, "
                           "one per core of a laptop; 1 fits them one after the other)")
    demo.add_argument("--threads", type=_positive_int, default=1,
                      help="torch CPU threads (default: 1; SCLD's small networks gain little "
                           "from more, and busy threads slow down shared machines)")
    demo.add_argument("--quick", action="store_true",
                      help="tiny models and few trees: a smoke test in seconds, not a benchmark")
    demo.add_argument("--quiet", action="store_true", help="no progress messages")
    demo.set_defaults(func=_demo)

    bench = sub.add_parser(
        "benchmark", help="run the benchmark suite of a source checkout (benchmarks/)",
        description="Run the scripts in benchmarks/ of the scaug source checkout, each in its "
                    "own process. Without --quick they write the published reports in docs/ "
                    "(hours on a CPU); --quick runs the scripts that have a quick mode with tiny "
                    "settings (minutes), writing to --out-dir. The real data sets must be in "
                    "$SCAUG_DATA_DIR.")
    bench.add_argument("names", nargs="*", metavar="NAME",
                       help="benchmarks to run (default: all; --list shows them)")
    bench.add_argument("--quick", action="store_true",
                       help="tiny settings: a smoke test of the suite, not a measurement")
    bench.add_argument("--out-dir", default="scaug-benchmark-quick",
                       help="where --quick writes its reports (default: ./scaug-benchmark-quick)")
    bench.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    bench.add_argument("--dry-run", action="store_true",
                       help="print the commands instead of running them")
    bench.set_defaults(func=_benchmark)
    _add_evaluate(sub)
    return parser


def main(argv=None) -> int:
    """Run the ``scaug`` command line; ``argv`` defaults to ``sys.argv[1:]``.

    Returns the exit status: 0 on success, 2 on a user mistake (one line on stderr; argparse
    exits with status 2 on bad options itself), 130 when interrupted.

    Examples
    --------
    >>> from scaug.cli import main
    >>> main(["info", "no-such-model.scld"])  # stderr: scaug info: error: no such file: ...
    2
    """
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, ValueError, KeyError, OSError) as err:
        message = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        lines = message.strip().splitlines() or [type(err).__name__]
        print(f"scaug {args.command}: error: {lines[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scaug {args.command}: interrupted", file=sys.stderr)
        return 130


# -- shared checks and writing -------------------------------------------------------------------
def _say(args, message):
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


def _check_input(path):
    if not os.path.exists(path):
        raise UserError(f"no such file: {path}")
    if not os.path.isfile(path):
        raise UserError(f"not a file: {path}")


def _check_output(args):
    path = args.output
    if os.path.isdir(path):
        raise UserError(f"output {path} is a folder; give a file name")
    if os.path.exists(path) and not args.overwrite:
        raise UserError(f"output {path} exists; pass --overwrite to replace it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"the folder of output {path} does not exist")


def _check_device(args):
    from ._torch_utils import resolve_device

    resolve_device(args.device)


def _read_h5ad(path):
    _check_input(path)
    import anndata as ad

    try:
        return ad.read_h5ad(path)
    except Exception as err:  # h5py and anndata raise many types for files that are not .h5ad
        raise UserError(f"cannot read {path} as an .h5ad file ({type(err).__name__}: {err})") from err


def _write_h5ad(adata, path):
    """Write through a temporary file in the same folder, renamed into place when complete."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".scaug-", suffix=".h5ad", dir=folder)
    os.close(fd)
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _model_options(args):
    """SCLD parameters from the command line (``--quick``: tiny models, for smoke tests)."""
    params = dict(random_state=args.seed, device=args.device, verbose=not args.quiet)
    if args.max_epochs is not None:
        params["max_epochs"] = args.max_epochs
    if args.quick:
        params.update(_QUICK_SCLD, **_QUICK_RUN)
    return params


def _batch_key(args):
    """``--batch-key``: one obs column as a str, several as a list."""
    keys = args.batch_key
    return None if keys is None else keys[0] if len(keys) == 1 else list(keys)


def _match_types(requested, known, what):
    """Map the type names typed on the command line to the labels (which may be numbers)."""
    by_name = {str(k): k for k in known}
    out = {}
    for label, n in requested:
        if label not in by_name:
            raise UserError(f"unknown cell type {label!r} in {what}; the types are "
                            f"{sorted(by_name)}")
        out[by_name[label]] = n
    return out


def _strategy(values, adata, labels_key):
    if len(values) == 1 and "=" not in values[0]:
        name = values[0].replace("-", " ")
        if name not in _STRATEGIES:
            raise UserError(f"--strategy {values[0]!r} is not one of auto, minority, not-minority, "
                            "not-majority, all, or TYPE=N")
        return name
    try:
        pairs = [_type_count(v) for v in values]
    except argparse.ArgumentTypeError as err:
        raise UserError(f"--strategy: {err}") from None
    from .tl import labels_of

    y, labelled = labels_of(adata, labels_key)
    return _match_types(pairs, set(y[labelled].tolist()), "--strategy")


# -- the commands --------------------------------------------------------------------------------
def _augment(args) -> int:
    _check_input(args.input)
    _check_output(args)
    if args.model is not None:
        _check_input(args.model)
    _check_device(args)
    from . import tl

    start = time.perf_counter()
    _say(args, f"reading {args.input}")
    adata = _read_h5ad(args.input)
    strategy = _strategy(args.strategy, adata, args.labels_key)
    params = _model_options(args)
    seed, device, verbose = params.pop("random_state"), params.pop("device"), params.pop("verbose")
    if args.model is not None:  # a reused model is not trained: only sampling options apply
        from .oversampler import SAMPLING_OPTIONS

        params = {k: v for k, v in params.items() if k in SAMPLING_OPTIONS}
    aug = tl.augment(adata, args.labels_key, batch_key=_batch_key(args), layer=args.layer,
                     sampling_strategy=strategy,
                     model=args.model, key_added=args.key_added, random_state=seed,
                     device=device, verbose=verbose, **params)
    n_syn = aug.uns["scaug"]["n_synthetic"]
    _say(args, f"writing {args.output}: {adata.n_obs} real + {n_syn} synthetic cells")
    _write_h5ad(aug, args.output)
    _say(args, f"done in {time.perf_counter() - start:.0f} s")
    return 0


def _fit(args) -> int:
    _check_input(args.input)
    _check_output(args)
    _check_device(args)
    from . import tl

    start = time.perf_counter()
    _say(args, f"reading {args.input}")
    adata = _read_h5ad(args.input)
    tl.counts_of(adata, args.layer)  # unknown layers and keys fail here, before training
    if args.labels_key is not None:
        tl.labels_of(adata, args.labels_key)
    tl.conditions_of(adata, _batch_key(args), args.labels_key)
    model = tl.fit(adata, args.labels_key, batch_key=_batch_key(args), layer=args.layer,
                   **_model_options(args))
    model.save(args.output, overwrite=args.overwrite)
    _say(args, f"saved the model to {args.output} in {time.perf_counter() - start:.0f} s")
    return 0


def _sample(args) -> int:
    _check_input(args.model)
    _check_output(args)
    if len(args.n) == 1 and "=" not in args.n[0]:
        try:
            request = int(args.n[0])
        except ValueError:
            raise UserError(f"--n expects TYPE=N ... or one number, got {args.n[0]!r}") from None
        if request < 0:
            raise UserError(f"--n expects a number >= 0, got {request}")
        pairs = None
    else:
        try:
            pairs = [_type_count(v) for v in args.n]
        except argparse.ArgumentTypeError as err:
            raise UserError(f"--n: {err}") from None
    _check_device(args)
    from . import tl
    from .model import SCLD

    model = SCLD.load(args.model, device=args.device)
    model.set_params(verbose=not args.quiet)
    if pairs is not None:
        if model.classes_ is None:
            raise UserError(f"{args.model} was fitted without labels; ask for one number of cells")
        request = _match_types(pairs, model.classes_.tolist(), "--n")
    syn = tl.sample(model, request, random_state=args.seed, labels_key=args.labels_key)
    _say(args, f"writing {args.output}: {syn.n_obs} synthetic cells")
    _write_h5ad(syn, args.output)
    return 0


def _info(args) -> int:
    _check_input(args.model)
    import json

    from ._torch_utils import checked_load
    from .model import SCLD

    try:
        version = checked_load(args.model, expected_class="SCLD")["format_version"]
    except ValueError as err:
        if "is not a scaug model file" in str(err):
            raise UserError(f"{args.model} is not a scaug model file") from None
        raise
    model = SCLD.load(args.model, device="cpu")
    names = getattr(model, "feature_names_in_", None)
    types = ({} if model.classes_ is None else
             {str(c): int(n) for c, n in zip(model.classes_, model.class_counts_, strict=True)})
    params = {k: v for k, v in model.get_params(deep=False).items() if k != "autoencoder"}
    conditions = {k: [str(v) for v in vals] for k, vals in model.conditions_.items()}
    if args.json:
        print(json.dumps({"path": args.model, "format_version": version, "types": types,
                          "conditions": conditions,
                          "n_genes": int(model.n_features_in_),
                          "genes": None if names is None else [str(g) for g in names],
                          "settings": {k: v if isinstance(v, int | float | str | bool | None)
                                       else repr(v) for k, v in params.items()}}, indent=2))
        return 0
    genes = (f"{model.n_features_in_} (names not stored)" if names is None else
             f"{model.n_features_in_}: " + ", ".join(map(str, names[:5]))
             + (", ..." if len(names) > 5 else ""))
    print(f"scaug model {args.model} (format version {version})")
    print(f"genes: {genes}")
    if types:
        width = max(map(len, types))
        print(f"cell types ({len(types)}), with their labelled training cells:")
        for name, n in types.items():
            print(f"  {name.ljust(width)}  {n}")
    else:
        print("cell types: none (fitted without labels)")
    for key, vals in conditions.items():
        shown = ", ".join(vals[:5]) + (", ..." if len(vals) > 5 else "")
        print(f"condition {key} ({len(vals)} values): {shown}")
    print("settings:")
    for key, value in params.items():
        print(f"  {key} = {value!r}")
    return 0


def _benchmarks_dir():
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def _benchmarks():
    """``{name: (first docstring line, has a quick mode)}`` of the scripts in benchmarks/."""
    import ast

    folder = _benchmarks_dir()
    if not os.path.isdir(folder):
        raise UserError("scaug benchmark runs the scripts in benchmarks/ of a source checkout of "
                        "scaug, and this installation has none; clone the repository and "
                        "'pip install -e .' it")
    found = {}
    for file in sorted(os.listdir(folder)):
        if file.endswith(".py") and not file.startswith("_"):
            with open(os.path.join(folder, file), encoding="utf-8") as fh:
                text = fh.read()
            doc = (ast.get_docstring(ast.parse(text)) or "").strip().splitlines()
            found[file[:-3]] = (doc[0] if doc else "", '"--quick"' in text)
    return found


def _benchmark(args) -> int:
    import shlex
    import subprocess

    found = _benchmarks()
    if args.list:
        width = max(map(len, found))
        for name, (summary, quick) in found.items():
            print(f"{name.ljust(width)}  {'[quick] ' if quick else ''}{summary}")
        return 0
    unknown = [n for n in args.names if n not in found]
    if unknown:
        raise UserError(f"unknown benchmark(s) {unknown}; they are {list(found)}")
    names = args.names or list(found)
    if args.quick:
        slow = [n for n in names if not found[n][1]]
        if args.names and slow:
            raise UserError(f"{slow} have no quick mode; those that have: "
                            f"{[n for n, (_, q) in found.items() if q]}")
        names = [n for n in names if found[n][1]]
    if not os.environ.get("SCAUG_DATA_DIR") and not args.dry_run:
        raise UserError("the benchmarks use the real data sets: set SCAUG_DATA_DIR to their "
                        "folder (see shared/data/README.md)")
    for name in names:
        command = [sys.executable, os.path.join(_benchmarks_dir(), f"{name}.py")]
        if args.quick:
            command += ["--quick", "--out-dir", args.out_dir]
        if args.dry_run:
            print(shlex.join(command))
            continue
        _say(args, f"scaug benchmark: {shlex.join(command)}")
        done = subprocess.run(command, check=False)
        if done.returncode != 0:
            raise UserError(f"{name} failed with exit status {done.returncode}")
    return 0


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
    import numpy as np

    _check_device(args)  # before any fold starts, as augment, fit and sample do
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
    from joblib import Parallel, delayed
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
    clf = XGBClassifier(n_estimators=5 if args.quick else 100, tree_method="hist",
                        n_jobs=max(1, 2 // args.jobs),
                        random_state=args.seed)
    augmenters = _augmenters(args, smote_k)
    for augmenter in augmenters.values():  # every flag checked before the first fold
        if augmenter is not None:
            augmenter._validate_params()
    folds = list(StratifiedKFold(args.folds, shuffle=True, random_state=args.seed).split(X, y))
    say(f"scaug demo: {X.shape[0]} cells x {X.shape[1]} genes, {len(counts)} cell types; "
        f"{args.folds}-fold cross-validation of [augmenter, NormalizeLog1p, XGBClassifier]")

    def one_fold(name, augmenter, i, train, test):
        torch.set_num_threads(args.threads)
        steps = [("norm", NormalizeLog1p()), ("clf", clone(clf))]
        if augmenter is not None:
            steps.insert(0, ("aug", clone(augmenter)))
        tic = time.perf_counter()
        pred = Pipeline(steps).fit(X[train], y[train]).predict(X[test])
        seconds = time.perf_counter() - tic
        macro = f1_score(y[test], pred, average="macro", zero_division=0)
        return name, i, macro, f1_score(y[test], pred, labels=rare, average=None,
                                        zero_division=0), seconds

    tasks = [(name, augmenter, i, train, test) for name, augmenter in augmenters.items()
             for i, (train, test) in enumerate(folds, 1)]
    threads = torch.get_num_threads()
    try:
        # folds are independent: with --jobs 2 each core fits its own (every fit is seeded, so
        # the scores do not depend on --jobs); SCLD's fits dominate, so they go first
        tasks.sort(key=lambda task: task[0] != "SCLD")
        jobs = min(args.jobs, len(tasks))
        say(f"  {len(tasks)} fits, {jobs} at a time ...")
        done = []
        for result in Parallel(n_jobs=jobs, return_as="generator")(
                delayed(one_fold)(*task) for task in tasks):
            done.append(result)
            name, i, macro, _, seconds = result
            say(f"  {name:<5} fold {i}/{args.folds}: macro-F1 {macro:.3f} ({seconds:.0f} s)")
    finally:
        torch.set_num_threads(threads)
    results = {}
    for name in augmenters:
        mine = [d for d in done if d[0] == name]
        results[name] = (np.mean([d[2] for d in mine]), np.mean([d[3] for d in mine], axis=0),
                         np.mean([d[4] for d in mine]))

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


# -- scaug evaluate ------------------------------------------------------------------------------
def _add_evaluate(sub) -> None:
    ev = sub.add_parser(
        "evaluate", help="will augmentation help my classifier? run scaug's protocol on an .h5ad",
        description="Run scaug's evaluation protocol on the counts of IN: per seed, a stratified "
                    "split holds out 30% of every type; the rare types keep at most --cap "
                    "training cells; each sampler (none, RandomOverSampler, SMOTE, "
                    "BorderlineSMOTE, ADASYN, LatentOverSampler, SCLDOverSampler, and scVI when "
                    "scvi-tools is installed) augments the training split only; the classifier "
                    "learns from log-normalised cells and is scored on the held-out real cells. "
                    "Prints which sampler to use (a win only when the 95% paired interval over "
                    "seeds against no augmentation excludes zero), or that none helped. "
                    "See scaug.tl.evaluate.")
    ev.add_argument("input", metavar="IN", help="input .h5ad file (integer counts)")
    ev.add_argument("--labels-key", required=True, metavar="KEY",
                    help="obs column with the cell types")
    ev.add_argument("--layer", default=None, help="layer holding the counts (default: X)")
    ev.add_argument("--classifier", default="xgboost", metavar="NAME",
                    help="xgboost (the default), logreg, rf, knn, or PATH.py: a Python file "
                         "defining make_classifier(random_state) that returns an unfitted "
                         "scikit-learn classifier")
    which = ev.add_mutually_exclusive_group()
    which.add_argument("--rare", type=_positive_int, default=3, metavar="N",
                       help="focus on the N rarest types (default: 3)")
    which.add_argument("--types", nargs="+", default=None, metavar="TYPE",
                       help="focus on these types instead of the rarest")
    ev.add_argument("--cap", type=_positive_int, default=None, metavar="N",
                    help="keep at most N (>= 2) training cells of each rare type (default: all)")
    ev.add_argument("--seeds", type=_positive_int, default=5, metavar="N",
                    help="splits, seeds --seed, --seed + 1, ... (default: 5; at least 2 for an "
                         "interval)")
    ev.add_argument("--samplers", nargs="+", default=None, metavar="NAME",
                    help="samplers to compare (default: all; 'none' is always added)")
    ev.add_argument("--sampling-strategy", choices=["auto", "rare"], default="auto",
                    help="raise every type (auto, the default) or only the rare types (rare) to "
                         "the size of the largest")
    ev.add_argument("--test-size", type=float, default=0.3,
                    help="fraction of every type held out (default: 0.3)")
    ev.add_argument("--report", default=None, metavar="DIR",
                    help="write report.md, results.csv and the figures (f1.png, embedding.png) "
                         "into DIR")
    ev.add_argument("--estimate", action="store_true",
                    help="print the expected run time, measured on the first split, before the "
                         "other splits run (also with --quiet)")
    ev.add_argument("--jobs", type=_positive_int, default=1,
                    help="threads of XGBoost and the random forest (default: 1)")
    ev.add_argument("--quick", action="store_true",
                    help="tiny SCLD, autoencoder and scVI models: a smoke test in seconds, not a "
                         "measurement")
    _common(ev)
    ev.set_defaults(func=_evaluate)


def _evaluate(args) -> int:
    _check_input(args.input)
    if args.report is not None and os.path.isfile(args.report):
        raise UserError(f"--report {args.report} is a file; give a folder")
    _check_device(args)
    from . import evaluation, tl

    start = time.perf_counter()
    _say(args, f"reading {args.input}")
    adata = _read_h5ad(args.input)
    classifier = args.classifier
    if classifier.endswith(".py"):
        _check_input(classifier)
    res = tl.evaluate(adata, args.labels_key, layer=args.layer, classifier=classifier,
                      rare=args.rare, types=args.types, cap=args.cap, seeds=args.seeds,
                      samplers=args.samplers, random_state=args.seed, verbose=not args.quiet,
                      test_size=args.test_size, sampling_strategy=args.sampling_strategy,
                      sampler_params=evaluation.QUICK if args.quick else None,
                      device=args.device, n_jobs=args.jobs, estimate=args.estimate)
    text = evaluation.report(res, args.report)
    if args.quick:
        text = ("(--quick: tiny models, a smoke test; the scores say nothing about the "
                "samplers)\n\n" + text)
    print(text, end="")
    if args.report is not None:
        _say(args, f"wrote {os.path.join(args.report, 'report.md')}, results.csv and the figures")
    _say(args, f"done in {time.perf_counter() - start:.0f} s")
    return 0
