"""The ``scaug`` command: demo (tiny settings), --help, --version and bad options."""

import subprocess
import sys

import pytest

import scaug
from scaug.cli import main


def test_quick_demo_prints_the_table(capsys):
    pytest.importorskip("xgboost")
    assert main(["demo", "--quick", "--folds", "2", "--seed", "1"]) == 0
    out, err = capsys.readouterr()
    assert "macro-F1" in out
    rows = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert {"none", "SMOTE", "SCLD"} <= rows
    assert "CD4+/CD45RA+/CD25- Naive T (n=8)" in out and "CD34+ (n=13)" in out
    assert "fold 2/2" in err  # progress goes to stderr


def test_quiet_silences_progress(capsys, monkeypatch):
    import scaug.cli as cli

    # only the progress plumbing is under test here: no models
    monkeypatch.setattr(cli, "_augmenters", lambda args, k: {"none": None})
    assert main(["demo", "--quick", "--folds", "2", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "macro-F1" in out and err == ""


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    assert "--max-epochs" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"scaug {scaug.__version__}"


@pytest.mark.parametrize("argv", [[], ["demo", "--folds", "zero"], ["demo", "--folds", "0"],
                                  ["demo", "--bogus"], ["nope"]])
def test_bad_options_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_folds_out_of_range(capsys):
    assert main(["demo", "--folds", "1", "--quiet"]) == 2
    assert main(["demo", "--folds", "9", "--quiet"]) == 2
    assert "at most 8" in capsys.readouterr().err


def test_python_dash_m():
    done = subprocess.run([sys.executable, "-m", "scaug", "--version"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("scaug ")
