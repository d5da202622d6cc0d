"""The headline benchmarks in one command: downstream classification and fidelity of rare cells.

    SCAUG_DATA_DIR=../shared/data python benchmarks/run.py --quick   # smoke test: minutes
    SCAUG_DATA_DIR=../shared/data python benchmarks/run.py --dev     # development seeds: choose here
    SCAUG_DATA_DIR=../shared/data python benchmarks/run.py --full    # reporting seeds: the docs
    SCAUG_DATA_DIR=../shared/data python benchmarks/run.py --full --estimate   # its cost first

``--full`` writes ``docs/downstream/downstream.md`` (five data sets, the headline regime ``cap10``,
XGBoost, logistic regression and 5-NN), ``docs/fidelity.md`` and ``docs/fidelity_10shot.md``
(cbmc and pbmc68k_reduced), each with its JSON: the README's headline tables, about 4 and 1 CPU
hours on a 2-core machine (``--estimate`` is pessimistic); ``--quick`` and ``--dev`` write to
``benchmarks/.cache/reports-<mode>/`` unless ``--out-dir`` says otherwise. Every entry is cached
by its full settings and the code's hash, so an interrupted run resumes where it stopped, and a
subset runs alone: ``--experiments``, ``--datasets``, ``--seeds``, ``--augmenters``,
``--classifiers``. The report is rendered from every cached entry of the requested subset.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _suite as S  # noqa: E402
import downstream  # noqa: E402
import fidelity  # noqa: E402

EXPERIMENTS = {"downstream": downstream, "fidelity": fidelity}
#: `scaug benchmark --quick` runs the scripts whose source names this flag, with --out-dir
QUICK_FLAG = "--quick"


def run_experiment(exp, args) -> list[str]:
    """Estimate, run (or read from the cache) and render one experiment; returns report paths."""
    exp.configure(args)
    cache = S.Cache()
    units = exp.units(args)
    todo = {u: exp.missing(u, args, cache) for u in units}
    todo = {u: t for u, t in todo.items() if t}
    seconds = sum(exp.estimate(u, t, args) for u, t in todo.items())
    print(f"{exp.NAME}: {len(units)} unit(s), {len(todo)} with work left; rough cost "
          f"{seconds / 3600:.1f} h for full-size models on one core of the 2-core machine of "
          f"the earlier reports{' (--quick: minutes)' if args.quick else ''} (data sets "
          f"{args.datasets}, seeds {args.seeds})", flush=True)
    if args.estimate:
        return []
    t0 = time.perf_counter()
    rows = [r for u in units for r in exp.run_unit(u, args, cache)]
    prov = S.provenance(args, rows, time.perf_counter() - t0, cache)
    return [S.write_report(args.out_dir, name, lines, payload)
            for name, lines, payload in exp.render(rows, args, prov)]


def main(argv=None) -> int:
    args = S.parser(__doc__, EXPERIMENTS).parse_args(argv)
    written = []
    for name in args.experiments:
        written += run_experiment(EXPERIMENTS[name], argparse.Namespace(**vars(args)))
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
