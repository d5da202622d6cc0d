"""Every bad or degenerate input of the registry in tests/failure_cases.py does what it must.

The same runs render docs/reliability.md (``python docs/_scripts/failure_cases.py``).
"""

from pathlib import Path

import pytest
from failure_cases import CASES, problems, run
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).absolute().parent.parent


@pytest.fixture(autouse=True)
def _single_blas_thread():
    with threadpool_limits(limits=1):
        yield


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_failure_case(case, tmp_path):
    found = problems(case, run(case, tmp_path))
    assert not found, f"{case.id}: {case.expect.describe()}, but " + "; ".join(found)


def test_case_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


def test_reliability_table_lists_every_case():
    table = (ROOT / "docs" / "reliability.md").read_text()
    missing = [case.id for case in CASES if f"| {case.case} |" not in table.replace("\\|", "|")]
    assert not missing, (
        f"docs/reliability.md lacks {len(missing)} case(s), e.g. {missing[:3]}; re-render it "
        "with `python docs/_scripts/failure_cases.py`"
    )
