"""Render docs/reliability.md: what every failure case of the test suite does now.

The cases are the registry in ``tests/failure_cases.py``, the one ``tests/test_failure_cases.py``
checks; this script runs each of them again and writes the table. Run it from anywhere::

    python docs/_scripts/failure_cases.py            # writes docs/reliability.md
    python docs/_scripts/failure_cases.py --check    # exit 1 if a case fails its expectation
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).absolute().parents[2]
OUT = ROOT / "docs" / "reliability.md"


def _commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        out = ""
    return out or "an unknown commit"


def render(cases, run, problems, describe):
    """The markdown page, and the number of cases that fail their expectation."""
    import sklearn

    lines = [
        # until a toctree lists this page, MyST's orphan flag keeps a warnings-as-errors
        # Sphinx build from failing on it
        "---",
        "orphan: true",
        "---",
        "",
        "# Reliability: bad and degenerate inputs",
        "",
        "Every row is a case the test suite tries (`tests/failure_cases.py`, checked by",
        "`tests/test_failure_cases.py`), with the behaviour the test requires and what the code",
        "does now, message included. Rendered by `python docs/_scripts/failure_cases.py` at",
        f"commit {_commit()} (Python {platform.python_version()}, scikit-learn",
        f"{sklearn.__version__}); temporary paths are shown as `<tmp>`.",
        "",
        "`InvalidParameterError` is scikit-learn's (`sklearn.utils._param_validation`), a",
        "subclass of `ValueError` and `TypeError`; `DegenerateInputWarning` is",
        "`scaug.metrics.DegenerateInputWarning`, a `UserWarning`.",
        "",
    ]
    n_failed, area = 0, None
    for case in cases:
        if case.area != area:
            area = case.area
            lines += ["", f"## scaug.{area}", "",
                      "| function | case | expected | does now | |", "|---|---|---|---|---|"]
        with tempfile.TemporaryDirectory() as tmp:
            outcome = run(case, Path(tmp))
            found = problems(case, outcome)
            now = describe(outcome).replace(str(Path(tmp).resolve()), "<tmp>").replace(tmp, "<tmp>")
        n_failed += bool(found)
        status = "ok" if not found else "**FAILS**: " + "; ".join(found).replace("|", "\\|")
        lines.append(f"| `{case.function}` | {case.case} | {case.expect.describe()} | {now} | "
                     f"{status} |")
    lines += ["", f"{len(cases)} cases, {len(cases) - n_failed} as expected.", ""]
    return "\n".join(lines), n_failed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output file (default {OUT})")
    args = parser.parse_args(argv)
    if os.environ.get("PYTHONHASHSEED") != "0":  # set order in messages: same page every run
        env = dict(os.environ, PYTHONHASHSEED="0")
        return subprocess.run([sys.executable, __file__, *sys.argv[1:]], env=env).returncode
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from failure_cases import CASES, describe, problems, run

    page, n_failed = render(CASES, run, problems, describe)
    if not args.check:
        args.out.write_text(page)
        print(f"wrote {args.out} ({len(CASES)} cases, {n_failed} failing)")
    else:
        print(f"{len(CASES)} cases, {n_failed} failing")
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
