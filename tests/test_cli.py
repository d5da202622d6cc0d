"""The ``scaug`` command: every command on small data (tiny models), --help, bad options."""

import json
import os
import re
import subprocess
import sys

import anndata as ad
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


def test_demo_scores_do_not_depend_on_jobs(capsys):
    pytest.importorskip("xgboost")
    tables = []
    for jobs in ("1", "2"):
        assert main(["demo", "--quick", "--folds", "2", "--jobs", jobs, "--quiet"]) == 0
        out = capsys.readouterr().out
        # the fit-time column differs from run to run; the scores must not
        tables.append([line.rsplit(None, 1)[0] for line in out.splitlines() if line.strip()])
    assert tables[0] == tables[1]


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


# -- augment, fit, sample, info, benchmark -------------------------------------------------------
SMALL = dict(n_cells=120, n_genes=20, n_types=3, n_markers=5, rare_sizes=(10,), random_state=0)


def _run(*argv, cwd=None):
    """``scaug ARGV`` in a fresh process, as a user runs it."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "scaug", *map(str, argv)], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small .h5ad file and a tiny model fitted on it by ``scaug fit`` (in a subprocess)."""
    from scaug.datasets import simulate

    folder = tmp_path_factory.mktemp("cli")
    adata = simulate(**SMALL)
    adata.layers["counts"] = adata.X.copy()
    adata.write_h5ad(folder / "in.h5ad")
    done = _run("fit", folder / "in.h5ad", "--labels-key", "cell_type", "-o", folder / "m.scld",
                "--quick", "--seed", "0")
    assert done.returncode == 0, done.stderr
    assert "saved the model" in done.stderr and "Traceback" not in done.stderr
    return folder


def test_help_imports_nothing_heavy():
    code = ("import sys, scaug.cli as cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'scanpy', 'anndata', 'numpy', 'sklearn') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip().endswith("[]")
    for command in ("augment", "fit", "sample", "info", "demo", "benchmark"):
        assert command in done.stdout


def test_augment_in_a_subprocess(files):
    out = files / "aug.h5ad"
    done = _run("augment", files / "in.h5ad", "-o", out, "--labels-key", "cell_type",
                "--strategy", "type_2=40", "--quick", "--seed", "1")
    assert done.returncode == 0, done.stderr
    assert "120 real + 30 synthetic cells" in done.stderr
    aug = ad.read_h5ad(out)
    assert aug.n_obs == 150 and int(aug.obs["synthetic"].sum()) == 30
    assert (aug.obs.loc[aug.obs["synthetic"], "cell_type"] == "type_2").all()
    assert aug.uns["scaug"]["params"]["random_state"] == 1
    assert [p.name for p in files.iterdir() if p.name.startswith(".scaug-")] == []


def test_sample_and_info_in_subprocesses(files):
    out = files / "syn.h5ad"
    done = _run("sample", files / "m.scld", "--n", "type_2=5", "type_0=2", "-o", out, "--quiet")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    syn = ad.read_h5ad(out)
    assert syn.obs["cell_type"].tolist() == ["type_2"] * 5 + ["type_0"] * 2
    assert list(syn.var_names) == [f"gene_{i}" for i in range(20)]

    done = _run("info", files / "m.scld")
    assert done.returncode == 0, done.stderr
    from scaug._utils import FORMAT_VERSION

    assert f"format version {FORMAT_VERSION}" in done.stdout
    assert "20: gene_0, gene_1" in done.stdout
    assert re.search(r"type_2\s+10", done.stdout) and re.search(r"type_0\s+55", done.stdout)
    assert "n_latent = 4" in done.stdout


def test_info_json_and_reuse_a_model(files, capsys, monkeypatch):
    assert main(["info", str(files / "m.scld"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["types"] == {"type_0": 55, "type_1": 55, "type_2": 10}
    assert info["n_genes"] == 20 and info["genes"][0] == "gene_0"
    assert info["settings"]["n_latent"] == 4

    import scaug.tl

    monkeypatch.setattr(scaug.tl, "_fit_scld", _no_training)
    out = files / "reused.h5ad"
    assert main(["augment", str(files / "in.h5ad"), "-o", str(out), "--labels-key", "cell_type",
                 "--model", str(files / "m.scld"), "--layer", "counts", "--quiet"]) == 0
    aug = ad.read_h5ad(out)
    assert aug.X is None and aug.layers["counts"].shape == (165, 20)  # "auto": 45 new cells
    # --overwrite replaces the output; the holistic --n N samples the training proportions
    assert main(["sample", str(files / "m.scld"), "--n", "9", "-o", str(out), "--overwrite",
                 "--quiet"]) == 0
    assert ad.read_h5ad(out).n_obs == 9


def _no_training(*args, **kwargs):
    raise AssertionError("a model was trained")


@pytest.mark.parametrize("argv, message", [
    (["augment", "{d}/missing.h5ad", "-o", "{d}/x.h5ad", "--labels-key", "cell_type"],
     "no such file"),
    (["augment", "{d}/in.h5ad", "-o", "{d}/x.h5ad", "--labels-key", "nope"], "'nope' is not a column"),
    (["augment", "{d}/in.h5ad", "-o", "{d}/x.h5ad", "--labels-key", "cell_type", "--layer", "raw"],
     "layer 'raw' is not in adata.layers"),
    (["augment", "{d}/in.h5ad", "-o", "{d}/x.h5ad", "--labels-key", "cell_type", "--strategy",
      "type_9=50"], "unknown cell type 'type_9'"),
    (["augment", "{d}/in.h5ad", "-o", "{d}/x.h5ad", "--labels-key", "cell_type", "--strategy",
      "type_2=3"], "has 10 already"),
    (["augment", "{d}/in.h5ad", "-o", "{d}/x.h5ad", "--labels-key", "cell_type", "--strategy",
      "most"], "--strategy 'most' is not one of"),
    (["augment", "{d}/in.h5ad", "-o", "{d}/in.h5ad", "--labels-key", "cell_type"],
     "exists; pass --overwrite"),
    (["augment", "{d}/in.h5ad", "-o", "{d}/nofolder/x.h5ad", "--labels-key", "cell_type"],
     "does not exist"),
    (["augment", "{d}/junk.h5ad", "-o", "{d}/x.h5ad", "--labels-key", "cell_type"],
     "cannot read"),
    (["augment", "{d}/in.h5ad", "-o", "{d}/x.h5ad", "--labels-key", "cell_type", "--device",
      "gpu"], "not a device name"),
    (["fit", "{d}/in.h5ad", "-o", "{d}/m2.scld", "--labels-key", "cell_type", "--layer", "raw"],
     "layer 'raw'"),
    (["fit", "{d}/in.h5ad", "-o", "{d}/m.scld"], "exists; pass --overwrite"),
    (["sample", "{d}/m.scld", "--n", "type_5=3", "-o", "{d}/x.h5ad"], "unknown cell type 'type_5'"),
    (["sample", "{d}/m.scld", "--n", "type_2=many", "-o", "{d}/x.h5ad"], "integer N"),
    (["sample", "{d}/in.h5ad", "--n", "3", "-o", "{d}/x.h5ad"], "not a scaug model file"),
    (["info", "{d}/junk.h5ad"], "not a scaug model file"),
    (["info", "{d}/nothing.scld"], "no such file"),
    (["benchmark", "nope", "--dry-run"], "unknown benchmark"),
])
def test_user_mistakes_are_one_line_before_training(files, argv, message, capsys, monkeypatch):
    import scaug.tl

    (files / "junk.h5ad").write_text("not an h5ad file\n")
    monkeypatch.setattr(scaug.tl, "_fit_scld", _no_training)
    assert main([a.format(d=files) for a in argv]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"scaug {argv[0]}: error: ")
    assert message in errors[0], err
    assert not (files / "x.h5ad").exists()


def test_no_gpu_and_no_traceback_in_a_subprocess(files):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = _run("augment", files / "in.h5ad", "-o", files / "x.h5ad", "--labels-key", "cell_type",
                "--device", "cuda")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("scaug augment: error: device='cuda'")


def test_outputs_are_written_atomically(tmp_path, monkeypatch):
    import scaug.cli as cli
    from scaug.datasets import simulate

    target = tmp_path / "out.h5ad"
    target.write_text("old")
    adata = simulate(**SMALL)

    def broken(self, path, *args, **kwargs):
        with open(path, "w") as fh:
            fh.write("half")
        raise OSError("disk full")

    monkeypatch.setattr(type(adata), "write_h5ad", broken)
    with pytest.raises(OSError, match="disk full"):
        cli._write_h5ad(adata, target)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.h5ad"]


def test_benchmark_list_and_quick(tmp_path):
    done = _run("benchmark", "--list")
    assert done.returncode == 0 and "downstream" in done.stdout and "[quick]" in done.stdout
    done = _run("benchmark", "--quick", "--dry-run", "--out-dir", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "run.py --quick --out-dir" in done.stdout and "fidelity" not in done.stdout
    done = _run("benchmark", "fidelity", "--quick", "--dry-run")
    assert done.returncode == 2 and "no quick mode" in done.stderr
