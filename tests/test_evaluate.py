"""scaug.evaluation, scaug.tl.evaluate and `scaug evaluate`: the protocol on a user's data (quick mode)."""

import importlib.util
import os

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

import scaug
from scaug import evaluation as E
from scaug.cli import main

CHEAP = ["none", "RandomOverSampler", "SMOTE", "BorderlineSMOTE", "ADASYN"]


@pytest.fixture(scope="module")
def sim():
    return scaug.datasets.simulate(n_cells=300, n_genes=40, n_types=4, n_markers=5,
                                   rare_sizes=(20, 14), random_state=0)


@pytest.fixture(scope="module")
def pbmc():
    return scaug.datasets.pbmc68k_reduced()


# -- splits -----------------------------------------------------------------------------------------
def test_splits_are_disjoint_stratified_and_capped(sim):
    y = sim.obs["cell_type"].astype(str).to_numpy()
    chosen = E.choose_types(y, rare=2)
    names, counts = np.unique(y, return_counts=True)
    assert chosen == [str(t) for t in names[np.argsort(counts, kind="stable")[:2]]]
    for seed in range(3):
        train, test = E.rare_split(y, seed=seed, types=chosen, test_size=0.3, cap=5)
        full_train, full_test = E.rare_split(y, seed=seed, types=chosen, test_size=0.3, cap=None)
        assert not set(train) & set(test)
        assert set(train) <= set(full_train) and np.array_equal(test, full_test)  # cap: train only
        for t, n in zip(names, counts, strict=True):
            held = int((y[test] == t).sum())
            assert abs(held - 0.3 * n) <= 1  # stratified: every type held out in proportion
            kept = int((y[train] == t).sum())
            assert kept == (min(5, n - held) if t in chosen else n - held)
    other = E.rare_split(y, seed=1, types=chosen, cap=5)[1]
    assert not np.array_equal(other, E.rare_split(y, seed=0, types=chosen, cap=5)[1])


def test_choose_types_ties_and_errors():
    y = np.array(["a"] * 5 + ["b"] * 2 + ["c"] * 9 + ["d"] * 2)
    assert E.choose_types(y, rare=3) == ["b", "d", "a"]
    assert E.choose_types(y, types=("c", "a")) == ["c", "a"]
    with pytest.raises(ValueError, match=r"unknown cell type\(s\) \['x'\].*the types are"):
        E.choose_types(y, types=["x"])
    with pytest.raises(ValueError, match="rare=4 asks for the 4 rarest of only 4"):
        E.choose_types(y, rare=4)


# -- statistics -------------------------------------------------------------------------------------
def test_paired_interval_is_scipys_paired_t():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.6, 0.1, 6), rng.normal(0.5, 0.1, 6)
    p = E.paired_interval(dict(enumerate(a)), dict(enumerate(b)))
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert p["n"] == 6 and p["diff"] == pytest.approx(np.mean(a - b))
    assert (p["lo"], p["hi"]) == pytest.approx((ci.low, ci.high))
    assert p["verdict"] == ("win" if ci.low > 0 else "loss" if ci.high < 0 else "no difference shown")
    # only the seeds both have are paired; NaN scores are left out
    q = E.paired_interval({0: 0.9, 1: 0.8, 2: np.nan, 5: 0.1}, {0: 0.5, 1: 0.45, 2: 0.3})
    assert q["n"] == 2 and q["diff"] == pytest.approx(0.375)
    assert E.paired_interval({0: 0.9}, {0: 0.5})["verdict"] == "n/a"
    # lower is better (the realism AUC): a clearly lower score is a win
    r = E.paired_interval({0: 0.6, 1: 0.62, 2: 0.61}, {0: 0.9, 1: 0.93, 2: 0.9}, higher_is_better=False)
    assert r["verdict"] == "win" and r["hi"] < 0


def _frame(scores, cost=None):
    rows = []
    for name, values in scores.items():
        for seed, v in enumerate(values):
            rows.append(dict(seed=seed, sampler=name, status="ok", note="", rare_f1=v,
                             macro_f1=0.8, augment_s=(cost or {}).get(name, 1.0)))
    return pd.DataFrame(rows)


def test_verdict_logic():
    base = [0.50, 0.60, 0.40, 0.55, 0.45]
    smote, scld = [0.10, 0.16, 0.12, 0.14, 0.13], [0.15, 0.12, 0.16, 0.13, 0.17]  # both gain; a tie
    win = _frame({"none": base, "SMOTE": [v + g for v, g in zip(base, smote, strict=True)],
                  "SCLDOverSampler": [v + g for v, g in zip(base, scld, strict=True)],
                  "ADASYN": [v - 0.2 + 0.3 * (i % 2) for i, v in enumerate(base)]},
                 cost={"SMOTE": 0.1, "SCLDOverSampler": 90.0})
    v = E.verdict(win)
    assert v["answer"] == "use" and v["sampler"] == "SCLDOverSampler"  # the largest gain ...
    assert "Also a win, and not shown worse than it: SMOTE" in v["text"]  # ... and the cheaper tie
    comps = v["comparisons"].set_index("sampler")
    assert comps.loc["ADASYN", "verdict"] == "no difference shown"

    loss = _frame({"none": base, "SMOTE": [v - 0.1 - 0.01 * i for i, v in enumerate(base)],
                   "ROS": [v + 0.2 * (-1) ** i for i, v in enumerate(base)]})
    v = E.verdict(loss)
    assert v["answer"] == "none of them" and v["sampler"] is None
    assert v["text"].startswith("None of them") and "SMOTE (-0.120" in v["text"]

    flat = _frame({"none": base, "SMOTE": [v + 0.2 * (-1) ** i for i, v in enumerate(base)]})
    assert E.verdict(flat)["answer"] == "no difference shown"
    assert E.report(flat).splitlines()[2].startswith("**No difference shown**: with 5 seeds")

    one = _frame({"none": [0.5], "SMOTE": [0.9]})
    assert E.verdict(one)["answer"] == "n/a" and "at least 2 seeds" in E.verdict(one)["text"]

    # a win on rare-type F1 that costs macro-F1 says so
    hurt = win.copy()
    hurt.loc[hurt["sampler"] == "SCLDOverSampler", "macro_f1"] = [0.6, 0.62, 0.61, 0.6, 0.63]
    assert "But it lowers macro-F1" in E.verdict(hurt)["text"]


# -- the protocol -----------------------------------------------------------------------------------
def test_evaluate_every_sampler_on_simulated_data(sim):
    before = sim.copy()
    # type_2: 20 cells, 6 held out, enough for a realism score (type_3, 14 cells, holds out 4)
    res = scaug.tl.evaluate(sim, "cell_type", classifier="knn", types=["type_2"], cap=8, seeds=2,
                            sampler_params=E.QUICK, random_state=3, verbose=False)
    names = [n for n in E.SAMPLERS if n != "scVI" or E._scvi_installed()]
    assert list(res.columns) == E._COLUMNS
    assert len(res) == 2 * len(names) and res["seed"].tolist() == [3] * len(names) + [4] * len(names)
    assert res["sampler"].tolist()[: len(names)] == names
    assert (res["status"] == "ok").all(), res[["sampler", "note"]]
    ok = res[res["sampler"] != "none"]
    assert (ok["n_synthetic"] > 0).all() and (res.loc[res["sampler"] == "none", "n_synthetic"] == 0).all()
    for col in ("rare_f1", "macro_f1", "balanced_accuracy"):
        assert res[col].between(0, 1).all()
    assert ok["realism_auc"].between(0, 1).all() and res.loc[res["sampler"] == "none",
                                                             "realism_auc"].isna().all()
    assert (res["augment_s"] >= 0).all()
    info = res.attrs["scaug_evaluate"]
    assert info["rare_types"] == ["type_2"] and info["test_counts"] == {"type_2": 6}
    assert all(n <= 8 for n in info["train_counts"].values())  # the cap holds
    assert n_train_consistent(res)
    assert set(info["embedding"]) >= {"real", "SMOTE", "SCLDOverSampler"}
    # the AnnData is untouched
    assert sim.obs.equals(before.obs) and sim.uns.keys() == before.uns.keys()
    dense = [m.toarray() if sp.issparse(m) else np.asarray(m) for m in (sim.X, before.X)]
    assert np.array_equal(*dense)


def n_train_consistent(res):
    return res.groupby("seed")["n_train"].nunique().eq(1).all()


def test_evaluate_is_repeatable_and_records_skips(sim):
    y = sim.obs["cell_type"].astype(str).to_numpy().copy()
    y[:2] = "tiny"  # a type of 2 cells: 1 training cell, too few for SMOTE's neighbours
    kw = dict(classifier="knn", types=["type_1", "type_2"], seeds=2, samplers=CHEAP, realism=False,
              verbose=False)
    a = E.evaluate(sim.X, y, **kw)
    b = E.evaluate(sim.X, y, **kw)
    pd.testing.assert_frame_equal(a.drop(columns=["augment_s", "classify_s"]),
                                  b.drop(columns=["augment_s", "classify_s"]))
    skipped = a[a["status"] == "skipped"]
    assert set(skipped["sampler"]) >= {"SMOTE", "BorderlineSMOTE", "ADASYN"}
    assert skipped["note"].str.contains("1 training cell").any() and skipped["rare_f1"].isna().all()
    assert "skipped" in E.report(a)


def test_evaluate_on_pbmc68k_reduced_and_report(pbmc, tmp_path, capsys):
    res = scaug.tl.evaluate(pbmc, "cell_type", classifier="knn", rare=3, cap=10, seeds=2,
                            samplers=["none", "SMOTE", "LatentOverSampler", "SCLDOverSampler"],
                            sampler_params=E.QUICK, verbose=True)
    assert res.shape == (8, len(E._COLUMNS))
    info = res.attrs["scaug_evaluate"]
    assert info["rare_types"] == ["CD4+/CD45RA+/CD25- Naive T", "CD34+", "CD4+/CD45RO+ Memory"]
    assert info["type_counts"] == {"CD4+/CD45RA+/CD25- Naive T": 8, "CD34+": 13,
                                   "CD4+/CD45RO+ Memory": 19}
    assert max(info["train_counts"].values()) <= 10
    assert "the first split took" in capsys.readouterr().err  # the estimate, after one split
    text = E.report(res, tmp_path / "out")
    assert text.startswith("# Will augmentation help my classifier?")
    assert E.verdict(res)["text"].split(":")[0].replace("*", "") in text
    assert (tmp_path / "out" / "report.md").read_text() == text
    assert pd.read_csv(tmp_path / "out" / "results.csv").shape == res.shape
    if importlib.util.find_spec("matplotlib") is not None:
        assert os.path.getsize(tmp_path / "out" / "f1.png") > 0
        assert os.path.getsize(tmp_path / "out" / "embedding.png") > 0


def test_user_classifier_file(sim, tmp_path):
    path = tmp_path / "clf.py"
    path.write_text("from sklearn.linear_model import LogisticRegression\n\n"
                    "def make_classifier(random_state):\n"
                    "    return LogisticRegression(C=0.5, max_iter=500)\n")
    res = scaug.tl.evaluate(sim, "cell_type", classifier=str(path), rare=1, seeds=2,
                            samplers=["RandomOverSampler"], realism=False, verbose=False)
    assert res["sampler"].tolist() == ["none", "RandomOverSampler"] * 2
    assert res.attrs["scaug_evaluate"]["classifier"] == str(path)
    from sklearn.neighbors import KNeighborsClassifier

    est = scaug.tl.evaluate(sim, "cell_type", classifier=KNeighborsClassifier(3), rare=1, seeds=2,
                            samplers=["none"], verbose=False)
    assert est["rare_f1"].notna().all()


def test_xgboost_the_default_classifier(sim):
    pytest.importorskip("xgboost")
    res = scaug.tl.evaluate(sim, "cell_type", rare=1, seeds=2, samplers=["SMOTE"], realism=False,
                            verbose=False)
    assert res.attrs["scaug_evaluate"]["classifier"] == "xgboost"
    assert (res["status"] == "ok").all() and res["rare_f1"].between(0, 1).all()


# -- errors, all before any work ------------------------------------------------------------------
@pytest.fixture
def no_work(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was fitted before the error")
    monkeypatch.setattr(E, "_synthesize", refuse)


def test_errors_before_any_work(sim, pbmc, no_work, tmp_path):
    ev = scaug.tl.evaluate
    with pytest.raises(ValueError, match="only one class"):
        E.evaluate(sim.X, np.array(["a"] * sim.n_obs), verbose=False)
    with pytest.raises(ValueError, match=r"'LatentOverSampler', 'SCLDOverSampler'.*layer="):
        ev(pbmc, "cell_type", layer="lognorm", verbose=False)
    with pytest.raises(ValueError, match="log-normalises counts"):
        ev(pbmc, "cell_type", layer="lognorm", samplers=["SMOTE"], verbose=False)
    with pytest.raises(ValueError, match=r"unknown cell type\(s\) \['B cells'\]"):
        ev(pbmc, "cell_type", types=["B cells"], verbose=False)
    with pytest.raises(ValueError, match="unknown classifier 'svm'"):
        ev(sim, "cell_type", classifier="svm", verbose=False)
    with pytest.raises(ValueError, match="is not a file"):
        ev(sim, "cell_type", classifier=str(tmp_path / "nope.py"), verbose=False)
    with pytest.raises(ValueError, match=r"unknown sampler\(s\) \['GAN'\]"):
        ev(sim, "cell_type", samplers=["GAN"], verbose=False)
    with pytest.raises(ValueError, match="cap must be None or an integer >= 2"):
        ev(sim, "cell_type", cap=1, verbose=False)
    with pytest.raises(KeyError, match="labels_key 'celltype'"):
        ev(sim, "celltype", verbose=False)
    y = sim.obs["cell_type"].astype(str).to_numpy().copy()
    y[:2] = "pair"  # 2 cells: 1 held out, 1 for training
    with pytest.raises(ValueError, match="'pair' has 2 cells.*at least 1 held-out and 2 training"):
        E.evaluate(sim.X, y, verbose=False)
    y[2] = "single"
    with pytest.raises(ValueError, match=r"\['single'\] have a single cell"):
        E.evaluate(sim.X, y, verbose=False)


# -- the command line -------------------------------------------------------------------------------
def test_cli_evaluate(sim, tmp_path, capsys):
    path = str(tmp_path / "sim.h5ad")
    sim.write_h5ad(path)
    out_dir = str(tmp_path / "report")
    argv = ["evaluate", path, "--labels-key", "cell_type", "--classifier", "knn", "--rare", "1",
            "--cap", "8", "--seeds", "2", "--samplers", "RandomOverSampler", "SMOTE"]
    assert main([*argv, "--report", out_dir, "--quiet", "--estimate"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("# Will augmentation help my classifier?")
    assert "the first split took" in err and "%" not in err.split("took")[0]  # only the estimate
    assert sorted(os.listdir(out_dir))[-2:] == ["report.md", "results.csv"]
    assert main([*argv[:6], "--classifier", "svm", "--quiet"]) == 2
    assert "scaug evaluate: error: unknown classifier 'svm'" in capsys.readouterr().err
    assert main([*argv[:4], "--types", "B cells", "--quiet"]) == 2
    assert "unknown cell type(s) ['B cells']" in capsys.readouterr().err
