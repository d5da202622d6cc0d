"""Tests for scaug.metrics on simulated counts with known answers."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.utils._param_validation import InvalidParameterError
from threadpoolctl import threadpool_limits

from scaug import metrics
from scaug.metrics import (
    DegenerateInputWarning,
    c2st_auc,
    dcr_ratio,
    distance_to_closest_record,
    energy_distance,
    evaluate,
    gene_mean_correlation,
    gene_variance_correlation,
    knn_precision_recall,
    library_size_distance,
    log_fold_change,
    marker_agreement,
    mmd_rbf,
    normalize_log1p,
    pca_embed,
    zero_fraction_error,
)

N_CELLS, N_GENES = 300, 200


@pytest.fixture(autouse=True)
def _single_blas_thread():
    # Tiny matrices: BLAS threads only add contention on a busy test machine.
    with threadpool_limits(limits=1):
        yield


def _nb_counts(rng, mu, n_cells, r=2.0):
    return rng.negative_binomial(r, r / (r + mu), size=(n_cells, mu.size)).astype(float)


@pytest.fixture(scope="module")
def data():
    """Counts and log-normalised values of a real population and four kinds of synthetic cells."""
    rng = np.random.default_rng(1)
    mu = rng.gamma(0.6, 3.0, size=N_GENES)
    shifted_mu = mu.copy()
    shifted_mu[: N_GENES // 5] *= 3.0  # a fifth of the genes up threefold
    counts = {
        "real": _nb_counts(rng, mu, N_CELLS),
        "fresh": _nb_counts(rng, mu, N_CELLS),  # same distribution
        "holdout": _nb_counts(rng, mu, N_CELLS),
        "shifted": _nb_counts(rng, shifted_mu, N_CELLS),
    }
    log = {name: normalize_log1p(x) for name, x in counts.items()}
    # collapsed: a sample of the right population with its spread around the mean cut to 30 %
    other = normalize_log1p(_nb_counts(rng, mu, N_CELLS))
    centre = other.mean(axis=0)
    log["collapsed"] = centre + 0.3 * (other - centre)
    return counts, log


# ----------------------------------------------------------------------------------------------
# known cases
# ----------------------------------------------------------------------------------------------
def test_same_distribution_scores_near_ideal(data):
    counts, log = data
    real, fresh = log["real"], log["fresh"]
    assert c2st_auc(real, fresh, random_state=0) < 0.6
    assert abs(mmd_rbf(real, fresh, random_state=0)) < 2e-3
    assert abs(energy_distance(real, fresh, random_state=0)) < 0.1
    precision, recall = knn_precision_recall(real, fresh, random_state=0)
    assert precision > 0.75 and recall > 0.75
    assert gene_mean_correlation(real, fresh) > 0.95
    assert gene_variance_correlation(real, fresh) > 0.95
    assert zero_fraction_error(counts["real"], counts["fresh"]) < 0.04
    assert library_size_distance(counts["real"], counts["fresh"]) < 0.05


def test_shifted_sample_scores_clearly_worse(data):
    counts, log = data
    real, fresh, shifted = log["real"], log["fresh"], log["shifted"]
    assert c2st_auc(real, shifted, random_state=0) > 0.8
    mmd_fresh = mmd_rbf(real, fresh, random_state=0)
    mmd_shifted = mmd_rbf(real, shifted, random_state=0)
    assert mmd_shifted > 0.01 and mmd_shifted > 10 * abs(mmd_fresh)
    assert energy_distance(real, shifted, random_state=0) > 10 * abs(
        energy_distance(real, fresh, random_state=0)
    )
    assert gene_mean_correlation(real, shifted) < gene_mean_correlation(real, fresh)
    precision, recall = knn_precision_recall(real, shifted, random_state=0)
    assert recall < 0.5
    assert library_size_distance(counts["real"], counts["shifted"]) > 0.2


def test_collapsed_sample_scores_clearly_worse(data):
    _, log = data
    real, collapsed = log["real"], log["collapsed"]
    # same mean, too little spread: the default classifier must still see it
    assert c2st_auc(real, collapsed, random_state=0) > 0.8
    precision, recall = knn_precision_recall(real, collapsed, random_state=0)
    assert precision > 0.9  # each synthetic cell looks plausible ...
    assert recall < 0.3  # ... but the variety of real cells is not covered
    assert mmd_rbf(real, collapsed, random_state=0) > 0.01


def test_logistic_classifier_misses_collapse_but_default_does_not(data):
    _, log = data
    real, collapsed = log["real"], log["collapsed"]
    assert c2st_auc(real, collapsed, classifier="logistic", random_state=0) < 0.75
    assert c2st_auc(real, collapsed, random_state=0) > 0.8


def test_copies_of_training_cells_are_flagged_by_dcr(data):
    _, log = data
    train, holdout = log["real"], log["holdout"]
    copies = train[:150]
    assert dcr_ratio(train, copies, holdout) == 0.0
    assert np.all(distance_to_closest_record(train, copies) < 1e-8)
    assert 0.8 < dcr_ratio(train, log["fresh"], holdout) < 1.25
    # nearly-copies (copies plus a little noise) are flagged too
    noisy = copies + np.random.default_rng(0).normal(scale=0.05, size=copies.shape)
    assert dcr_ratio(train, noisy, holdout) < 0.5


def test_naive_real_only_pca_is_biased_but_default_is_not():
    # 200 cells of 500 independent noisy genes: fitting the PCA on `real` alone makes a second
    # sample of the same distribution look different; the default pooled PCA does not.
    rng = np.random.default_rng(0)
    real, fresh = rng.normal(size=(200, 500)), rng.normal(size=(200, 500))
    assert c2st_auc(real, fresh, reference=real, random_state=0) > 0.8
    assert c2st_auc(real, fresh, random_state=0) < 0.65
    # an independent real reference is unbiased too
    reference = rng.normal(size=(200, 500))
    assert c2st_auc(real, fresh, reference=reference, random_state=0) < 0.65


# ----------------------------------------------------------------------------------------------
# dense and sparse input
# ----------------------------------------------------------------------------------------------
PAIR_METRICS = [
    ("c2st_auc", lambda a, b: c2st_auc(a, b, random_state=0)),
    ("mmd_rbf", lambda a, b: mmd_rbf(a, b, random_state=0)),
    ("energy_distance", lambda a, b: energy_distance(a, b, random_state=0)),
    ("knn_precision_recall", lambda a, b: knn_precision_recall(a, b, random_state=0)),
    ("gene_mean_correlation", gene_mean_correlation),
    ("gene_variance_correlation", gene_variance_correlation),
    ("zero_fraction_error", zero_fraction_error),
    ("library_size_distance", library_size_distance),
    ("distance_to_closest_record", distance_to_closest_record),
    ("pca_embed", lambda a, b: pca_embed(a, b, n_components=10, random_state=0)),
]


@pytest.fixture(scope="module")
def small_counts():
    rng = np.random.default_rng(3)
    mu = rng.gamma(0.5, 2.0, size=60)
    return _nb_counts(rng, mu, 80), _nb_counts(rng, mu * 1.5, 70)


@pytest.mark.parametrize("name, fn", PAIR_METRICS, ids=[name for name, _ in PAIR_METRICS])
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_dense_and_sparse_agree(small_counts, name, fn, fmt):
    real, synthetic = small_counts
    expected = fn(real, synthetic)
    got = fn(sp.csr_matrix(real).asformat(fmt), sp.csr_matrix(synthetic).asformat(fmt))
    if not isinstance(expected, tuple):
        expected, got = (expected,), (got,)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-9)


def test_normalize_log1p_dense_and_sparse_agree(small_counts):
    real, _ = small_counts
    dense = normalize_log1p(real)
    sparse = normalize_log1p(sp.csr_matrix(real))
    assert sp.issparse(sparse)
    np.testing.assert_allclose(sparse.toarray(), dense, rtol=1e-12)
    np.testing.assert_allclose(np.expm1(dense).sum(axis=1), 1e4)


def test_evaluate_dense_and_sparse_agree(small_counts):
    real, synthetic = small_counts
    dense = evaluate(real, synthetic, train=real[:40], random_state=0)
    sparse = evaluate(
        sp.csr_matrix(real),
        sp.csr_matrix(synthetic),
        train=sp.csr_matrix(real[:40]),
        random_state=0,
    )
    assert dense.keys() == sparse.keys()
    for key in dense:
        np.testing.assert_allclose(sparse[key], dense[key], rtol=1e-9, atol=1e-9, err_msg=key)


def test_sparse_explicit_zeros_count_as_zeros():
    real = np.array([[0.0, 1.0], [0.0, 2.0], [3.0, 0.0]])
    synthetic = sp.csr_matrix(real)
    synthetic.data[0] = 0.0  # an explicitly stored zero
    dense_synthetic = synthetic.toarray()
    assert zero_fraction_error(real, synthetic) == pytest.approx(
        zero_fraction_error(real, dense_synthetic)
    )
    assert zero_fraction_error(real, synthetic) == pytest.approx(1 / 6)


# ----------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------
def test_evaluate_keys_and_values(data):
    counts, _ = data
    scores = evaluate(counts["real"], counts["fresh"], train=counts["holdout"], random_state=0)
    assert set(scores) == {
        "c2st_auc",
        "mmd_rbf",
        "energy_distance",
        "precision",
        "recall",
        "gene_mean_corr",
        "gene_var_corr",
        "zero_fraction_error",
        "library_size_distance",
        "dcr_ratio",
    }
    assert all(isinstance(v, float) for v in scores.values())
    assert scores["c2st_auc"] < 0.6
    assert 0.8 < scores["dcr_ratio"] < 1.25
    # evaluate normalises counts itself: gene statistics are those of log-normalised values
    log_real, log_fresh = normalize_log1p(counts["real"]), normalize_log1p(counts["fresh"])
    assert scores["gene_var_corr"] == gene_variance_correlation(log_real, log_fresh)
    assert scores["zero_fraction_error"] == zero_fraction_error(counts["real"], counts["fresh"])


def test_evaluate_log_input_skips_library_size(data):
    _, log = data
    scores = evaluate(log["real"], log["collapsed"], counts=False, random_state=0)
    assert "library_size_distance" not in scores and "dcr_ratio" not in scores
    assert scores["c2st_auc"] > 0.8 and scores["recall"] < 0.3


def test_deterministic_for_a_random_state(small_counts):
    real, synthetic = small_counts
    a = evaluate(real[:40], synthetic, train=real[40:], random_state=7)
    b = evaluate(real[:40], synthetic, train=real[40:], random_state=7)
    assert a == b
    rs = np.random.RandomState(5)
    assert c2st_auc(real, synthetic, random_state=rs) == c2st_auc(
        real, synthetic, random_state=np.random.RandomState(5)
    )


def test_small_samples_work_and_warn_once():
    rng = np.random.default_rng(0)
    real, synthetic = rng.poisson(3.0, size=(3, 10)), rng.poisson(3.0, size=(4, 10))
    with pytest.warns(DegenerateInputWarning, match="Only 3 cells per sample") as record:
        scores = evaluate(real, synthetic, random_state=0)
    assert all(np.isfinite(v) for v in scores.values())
    assert 0.0 <= scores["c2st_auc"] <= 1.0
    few = [w for w in record if "Only 3 cells" in str(w.message)]
    assert len(few) == 1  # evaluate passes each metric warning on once
    assert few[0].filename == __file__  # attributed to the caller, not to scaug or scikit-learn


def test_pca_embed_fits_reference_and_clips_components():
    rng = np.random.default_rng(0)
    real, synthetic = rng.normal(size=(10, 50)), rng.normal(size=(12, 50))
    zr, zs = pca_embed(real, synthetic, n_components=30)
    assert zr.shape == (10, 19) and zs.shape == (12, 19)  # 20 pooled cells -> rank 19
    zr, zs = pca_embed(real, synthetic, n_components=5, reference=real)
    np.testing.assert_allclose(zr.mean(axis=0), 0.0, atol=1e-10)  # centred on the reference
    assert zr.shape == (10, 5)


def test_large_input_path_keeps_sparse_and_agrees(small_counts, monkeypatch):
    # Above the size limit the PCA runs on the sparse matrix (ARPACK) instead of a dense copy.
    real, synthetic = (normalize_log1p(x) for x in small_counts)
    exact = energy_distance(real, synthetic, n_components=5, random_state=0)
    monkeypatch.setattr(metrics, "_DENSE_PCA_MAX_ENTRIES", 0)
    sparse = energy_distance(
        sp.csr_matrix(real), sp.csr_matrix(synthetic), n_components=5, random_state=0
    )
    assert sparse == pytest.approx(exact, rel=1e-6)


def test_gene_statistics_match_numpy(small_counts):
    real, synthetic = small_counts
    expected = np.corrcoef(np.log1p(real.var(axis=0)), np.log1p(synthetic.var(axis=0)))[0, 1]
    assert gene_variance_correlation(sp.csr_matrix(real), synthetic) == pytest.approx(expected)
    expected = np.corrcoef(real.mean(axis=0), synthetic.mean(axis=0))[0, 1]
    assert gene_mean_correlation(real, synthetic, log=False) == pytest.approx(expected)


def test_constant_statistics_give_nan_with_a_warning():
    x = np.ones((5, 4))
    with pytest.warns(DegenerateInputWarning, match="same for every gene of real and synthetic"):
        assert np.isnan(gene_mean_correlation(x, x))
    rng = np.random.default_rng(0)
    real = rng.poisson(2.0, size=(20, 6)).astype(float)
    repeated = np.tile(real[:1], (20, 1))  # a collapsed generator: one cell, again and again
    with pytest.warns(DegenerateInputWarning, match="variance is the same for every gene of synth"):
        assert np.isnan(gene_variance_correlation(real, repeated))
    with pytest.warns(DegenerateInputWarning, match=r"\(1 gene\(s\)\)"):
        assert np.isnan(gene_mean_correlation(real[:, :1], real[:, :1] + 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # varying statistics: no warning
        assert gene_mean_correlation(real, real) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------
# identical samples and duplicate cells
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("container", [np.asarray, sp.csr_matrix])
def test_c2st_of_an_exact_copy_is_one_half(data, container):
    # Before duplicates were kept in one fold this scored about 0.03: each cell's copy, labelled
    # the other class, sat in the training folds, and the forest learnt the opposite label.
    real = container(data[1]["real"])
    assert c2st_auc(real, real.copy(), random_state=0) == pytest.approx(0.5, abs=1e-12)
    shuffled = data[1]["real"][np.random.default_rng(0).permutation(N_CELLS)]
    assert c2st_auc(real, container(shuffled), random_state=1) == pytest.approx(0.5, abs=1e-12)
    auc = c2st_auc(real, real, classifier="logistic", random_state=0)
    assert auc == pytest.approx(0.5, abs=1e-12)
    # both sides subsampled to different subsets of the same cells: still no leakage
    assert abs(c2st_auc(real, real, max_cells=200, random_state=0) - 0.5) < 0.1


def test_c2st_without_duplicates_uses_plain_stratified_folds(small_counts):
    # Without duplicate cells nothing changes: the score is exactly the earlier protocol's.
    real, synthetic = (normalize_log1p(x) for x in small_counts)
    got = c2st_auc(real, synthetic, n_components=10, random_state=3)
    rng = np.random.RandomState(3)
    seed = int(rng.randint(np.iinfo(np.int32).max))
    m = min(len(real), len(synthetic))
    sub = [x[np.sort(rng.choice(len(x), size=m, replace=False))] if len(x) > m else x
           for x in (real, synthetic)]
    zr, zs = pca_embed(sub[0], sub[1], n_components=10, reference=np.vstack(sub))
    X, y = np.vstack([zr, zs]), np.r_[np.zeros(m), np.ones(m)]
    forest = RandomForestClassifier(n_estimators=100, min_samples_leaf=2, random_state=seed)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    expected = cross_val_score(forest, X, y, cv=folds, scoring="roc_auc").mean()
    assert got == pytest.approx(expected, abs=1e-12)


def test_cells_shared_by_both_samples_stay_in_one_fold():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(40, 8))
    synthetic = rng.normal(size=(40, 8))
    synthetic[:10] = real[:10]  # ten real cells copied into the synthetic sample
    real[10:15] = real[10]  # one real cell repeated five times: not shared, free to split
    groups = metrics._shared_cell_groups(real, synthetic)
    assert groups.max() + 1 == 80 - 10
    y = np.r_[np.zeros(40), np.ones(40)]
    splits = metrics._c2st_splits(np.vstack([real, synthetic]), y, groups, 5, 0)
    assert len(splits) == 5
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
        assert set(y[test]) == {0, 1}


def test_a_cell_repeated_within_one_sample_is_still_detected():
    # A generator that emits one cell again and again is recognisable: grouping only the cells
    # shared by both samples leaves its repeats free to be learnt.
    rng = np.random.default_rng(0)
    real, synthetic = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    synthetic[:20] = synthetic[0]
    assert np.all(np.diff(metrics._shared_cell_groups(real, synthetic)) == 1)
    assert c2st_auc(real, synthetic, random_state=0) > 0.7


def test_row_keys_ignore_container_and_signed_zero():
    a = np.array([[0.0, 1.0], [-0.0, 1.0], [2.0, 0.0]])
    np.testing.assert_array_equal(metrics._shared_cell_groups(a, a[::-1]), [0, 0, 1, 1, 0, 0])
    b = sp.csr_matrix(np.array([[2.0, 0.0], [0.0, 1.0]]))
    explicit = sp.csr_matrix((np.array([0.0, 2.0]), np.array([1, 0]), np.array([0, 2])), shape=(1, 2))
    keys = metrics._row_keys(a, b, explicit)
    assert keys[0][0] == keys[0][1] == keys[1][1] and keys[0][2] == keys[1][0] == keys[2][0]


def test_identical_samples_score_ideal_everywhere(data):
    counts, log = data
    real = log["real"]
    assert mmd_rbf(real, real, random_state=0) <= 0 < mmd_rbf(real, log["shifted"], random_state=0)
    same = energy_distance(real, real, random_state=0)  # -2 E|X - X'| / n
    assert same <= 0 and -same < 0.1 * energy_distance(real, log["shifted"], random_state=0)
    assert knn_precision_recall(real, real, random_state=0) == (1.0, 1.0)
    assert gene_mean_correlation(real, real) == pytest.approx(1.0)
    assert zero_fraction_error(real, real) == 0.0
    assert library_size_distance(counts["real"], counts["real"]) == 0.0
    scores = evaluate(counts["real"], counts["real"], random_state=0)
    assert scores["c2st_auc"] == pytest.approx(0.5) and scores["precision"] == scores["recall"] == 1.0


def test_all_cells_identical_warns_and_scores_ideal():
    zeros = np.zeros((12, 5))
    with pytest.warns(DegenerateInputWarning, match="are identical"):
        assert c2st_auc(zeros, zeros, random_state=0) == 0.5
    with pytest.warns(DegenerateInputWarning, match="are identical"):
        assert energy_distance(zeros, sp.csr_matrix(zeros), random_state=0) == 0.0
    with pytest.warns(DegenerateInputWarning, match="are identical"):
        assert mmd_rbf(zeros, zeros, random_state=0) == 0.0
    with pytest.raises(ValueError, match="All 12 cells of `reference` are identical"):
        pca_embed(np.eye(5), np.eye(5), reference=zeros)
    with pytest.raises(ValueError, match="All 12 cells of `train` are identical"):
        dcr_ratio(zeros, np.eye(5), np.eye(5))


def test_c2st_with_too_few_groups_falls_back_with_a_warning():
    real = np.random.default_rng(0).normal(size=(30, 5))
    repeated = np.tile(real[:1], (30, 1))  # one real cell, again and again: one group of 31
    with pytest.warns(DegenerateInputWarning, match="folds that ignore copies"):
        assert c2st_auc(real, repeated, random_state=0) > 0.9
    # two different repeated cells are told apart perfectly
    with pytest.warns(DegenerateInputWarning, match="Only 3 cells"):
        assert c2st_auc(np.zeros((3, 4)), np.ones((3, 4)), random_state=0) == 1.0


def test_knn_classifier_on_tiny_samples():
    rng = np.random.default_rng(0)
    with pytest.warns(DegenerateInputWarning, match="Only 4 cells"):
        auc = c2st_auc(rng.normal(size=(4, 6)), rng.normal(size=(4, 6)), classifier="knn")
    assert 0.0 <= auc <= 1.0


# ----------------------------------------------------------------------------------------------
# counts or log-normalised values
# ----------------------------------------------------------------------------------------------
def test_evaluate_counts_refuses_log_normalised_input(data):
    counts, log = data
    with pytest.raises(ValueError, match="`real` is not raw counts.*Pass counts=False"):
        evaluate(log["real"], counts["fresh"], random_state=0)
    with pytest.raises(ValueError, match="`train` is not raw counts"):
        evaluate(counts["real"], counts["fresh"], train=log["holdout"], random_state=0)
    with pytest.raises(ValueError, match="`synthetic` contains negative values"):
        evaluate(counts["real"], -counts["fresh"], random_state=0)


def test_evaluate_log_input_warns_on_counts(data):
    counts, _ = data
    with pytest.warns(DegenerateInputWarning, match="`synthetic` looks like raw counts"):
        evaluate(normalize_log1p(counts["real"]), counts["fresh"], counts=False, random_state=0)


def test_library_size_distance_warns_on_non_counts(data):
    _, log = data
    with pytest.warns(DegenerateInputWarning, match="`real` is not raw counts"):
        library_size_distance(log["real"], np.rint(log["real"]))


def test_mostly_all_zero_genes_warn(data):
    counts, _ = data
    padded = [sp.hstack([sp.csr_matrix(x), sp.csr_matrix((N_CELLS, 3 * N_GENES))]).tocsr()
              for x in (counts["real"], counts["fresh"])]
    for fn in (gene_mean_correlation, gene_variance_correlation, zero_fraction_error):
        with pytest.warns(DegenerateInputWarning, match=r"60\d of the 800 genes are zero"):
            fn(*padded)


def test_dcr_ratio_with_duplicated_holdout_is_nan_with_a_warning(data):
    _, log = data
    train = log["real"]
    with pytest.warns(DegenerateInputWarning, match="no reference distance"):
        assert np.isnan(dcr_ratio(train, log["fresh"], train[:50]))


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------
GOOD = np.ones((5, 4))


@pytest.mark.parametrize(
    "real, synthetic, match",
    [
        (GOOD, np.ones((5, 3)), r"`real` has 4 genes .* `synthetic` has 3"),
        (np.ones(4), GOOD, r"`real` must be 2-D .* shape \(4,\)"),
        (GOOD, np.ones((2, 2, 2)), r"`synthetic` must be 2-D"),
        (GOOD, np.array([[np.nan] * 4] * 3), r"`synthetic` contains 12 NaN"),
        (sp.csr_matrix(np.array([[np.inf, 0.0], [1.0, 1.0]])), np.ones((2, 2)), "NaN or inf"),
        (np.ones((1, 4)), GOOD, r"`real` must have at least 2 cells"),
        (np.array([["a", "b"], ["c", "d"]]), np.ones((2, 2)), "numeric"),
        (None, GOOD, r"The 'real' parameter of \w+ must be an array-like"),
        (GOOD, "cells", r"The 'synthetic' parameter of \w+ must be an array-like"),
        (np.ones((0, 4)), GOOD, r"`real` must have at least 2 cells \(rows\); got 0"),
        (np.ones((5, 0)), np.ones((5, 0)), r"`real` must have at least one gene"),
    ],
)
@pytest.mark.parametrize(
    "fn", [c2st_auc, mmd_rbf, energy_distance, zero_fraction_error, gene_mean_correlation, evaluate]
)
def test_bad_input_raises_helpful_error(fn, real, synthetic, match):
    with pytest.raises(ValueError, match=match):
        fn(real, synthetic)


def test_anndata_is_refused_with_a_pointer_to_its_matrix():
    ad = pytest.importorskip("anndata")
    adata = ad.AnnData(np.ones((4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"`real` is an AnnData; pass its matrix instead \(`adata.X`"):
        zero_fraction_error(adata, np.ones((4, 3)))


@pytest.mark.parametrize(
    "fn, kwargs, parameter",
    [
        (c2st_auc, {"classifier": "svm"}, "classifier"),
        (c2st_auc, {"classifier": object()}, "classifier"),
        (c2st_auc, {"cv": 1}, "cv"),
        (c2st_auc, {"max_cells": 1}, "max_cells"),
        (c2st_auc, {"random_state": "seed"}, "random_state"),
        (mmd_rbf, {"n_components": 0}, "n_components"),
        (mmd_rbf, {"n_components": True}, "n_components"),
        (mmd_rbf, {"n_components": 2.0}, "n_components"),
        (mmd_rbf, {"bandwidths": 0.0}, "bandwidths"),
        (energy_distance, {"reference": "cells"}, "reference"),
        (knn_precision_recall, {"k": 0}, "k"),
        (gene_mean_correlation, {"log": "yes"}, "log"),
        (evaluate, {"counts": 1}, "counts"),
        (evaluate, {"k": False}, "k"),
        (normalize_log1p, {"target_sum": 0}, "target_sum"),
    ],
)
def test_bad_parameters_get_scikit_learns_message(fn, kwargs, parameter):
    x = np.random.default_rng(0).poisson(2.0, size=(20, 6))
    args = (x,) if fn is normalize_log1p else (x, x)
    with pytest.raises(InvalidParameterError, match=f"The '{parameter}' parameter of {fn.__name__}"):
        fn(*args, **kwargs)


def test_bad_options_raise_helpful_errors():
    x = np.random.default_rng(0).poisson(2.0, size=(20, 6))
    with pytest.raises(ValueError, match="`bandwidths` must be a non-empty sequence"):
        mmd_rbf(x, x, bandwidths=[1.0, -1.0])
    with pytest.raises(ValueError, match=r"`k` \(25\) must be smaller than the number of real"):
        knn_precision_recall(x, x, k=25)
    with pytest.raises(ValueError, match="`synthetic` contains negative values"):
        library_size_distance(x, -x)
    with pytest.raises(ValueError, match="pass log=False"):
        gene_mean_correlation(x - 10.0, x)
    with pytest.raises(ValueError, match="`train` has 6 genes .* `holdout` has 5"):
        dcr_ratio(x, x, x[:, :5])
    with pytest.raises(ValueError, match="`reference` has 5 genes"):
        pca_embed(x, x, reference=x[:, :5])


def test_public_names():
    assert set(metrics.__all__) == {
        "DegenerateInputWarning",
        "c2st_auc",
        "dcr_ratio",
        "distance_to_closest_record",
        "energy_distance",
        "evaluate",
        "gene_mean_correlation",
        "gene_variance_correlation",
        "knn_precision_recall",
        "library_size_distance",
        "log_fold_change",
        "marker_agreement",
        "mmd_rbf",
        "normalize_log1p",
        "pca_embed",
        "zero_fraction_error",
    }


# ----------------------------------------------------------------------------------------------
# marker genes: fold changes of a type against the rest
# ----------------------------------------------------------------------------------------------
def test_log_fold_change_by_hand():
    group = np.array([[2, 2], [1, 3]])  # normalised to 4 per cell: unchanged
    rest = np.array([[4, 0], [0, 4]])
    # log1p means: group (ln 3 + ln 2) / 2 and (ln 3 + ln 4) / 2; rest ln 5 / 2 for both genes
    expm1_group = np.array([np.sqrt(6.0) - 1, np.sqrt(12.0) - 1])
    expm1_rest = np.sqrt(5.0) - 1
    for p in (1e-9, 0.1, 1.0):
        expected = np.log2((expm1_group + p) / (expm1_rest + p))
        got = log_fold_change(group, rest, target_sum=4, pseudocount=p)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    # the same from log-normalised input, and from sparse input
    np.testing.assert_allclose(
        log_fold_change(normalize_log1p(group, target_sum=4), normalize_log1p(rest, target_sum=4),
                        counts=False),
        log_fold_change(sp.csr_matrix(group), sp.csr_matrix(rest), target_sum=4), rtol=1e-12)


def test_log_fold_change_is_scanpys():
    sc = pytest.importorskip("scanpy")
    from scaug.datasets import simulate

    adata = simulate(n_cells=300, n_genes=60, n_types=3, rare_sizes=(40,), random_state=2)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.tl.rank_genes_groups(adata, "cell_type", groups=["type_2"], reference="rest",
                            method="t-test", n_genes=60)
    result = adata.uns["rank_genes_groups"]
    theirs = dict(zip(result["names"]["type_2"], result["logfoldchanges"]["type_2"], strict=True))
    rare = (adata.obs["cell_type"] == "type_2").to_numpy()
    ours = log_fold_change(adata.X[rare], adata.X[~rare], counts=False, pseudocount=1e-9)
    # scanpy keeps its fold changes in float32
    np.testing.assert_allclose(ours, [theirs[g] for g in adata.var_names], rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def marked_type():
    """Counts of a simulated rare type with 10 known marker genes (its cells in two halves)."""
    from scaug.datasets import simulate

    adata = simulate(n_cells=1200, n_genes=100, n_types=4, n_markers=10, fold_change=4.0,
                     rare_sizes=(200,), random_state=0)
    X = adata.X.toarray()
    is_type = (adata.obs["cell_type"] == "type_3").to_numpy()
    markers = np.flatnonzero((adata.var["marker_of"] == "type_3").to_numpy())
    cells = X[is_type]
    return cells[:100], cells[100:], X[~is_type], markers


def test_log_fold_change_finds_the_simulated_markers(marked_type):
    held_out, _, rest, markers = marked_type
    lfc = log_fold_change(held_out, rest)
    np.testing.assert_array_equal(np.sort(np.argsort(-lfc)[:10]), markers)
    # fold changes of 4 (times exp(N(0, 0.2))); scanpy's expm1 of mean log values shrinks lowly
    # expressed means more than high ones, so the markers come out above log2(4) = 2, and every
    # other gene (the other types' markers included) far below them
    assert lfc[markers].min() > 1.5 and np.delete(lfc, markers).max() < 1.0


def test_marker_agreement_of_real_synthetic_blurred_and_wrong_cells(marked_type):
    held_out, same, rest, markers = marked_type
    # the type's other real cells: its 10 markers, as strong
    real = marker_agreement(held_out, rest, same, n_markers=10)
    assert real["n_markers"] == 10 and real["sign_agreement"] == 1.0
    assert real["marker_recovery"] >= 0.8 and 0.9 < real["logfc_slope"] < 1.1
    assert marker_agreement(held_out, rest, same, n_markers=20)["logfc_correlation"] > 0.95
    # cells halfway (in counts) between the type and the rest: a marker 8x the rest becomes
    # 4.5x, log2(4.5) / log2(8) = 0.72 of its strength, signs and ranking kept
    rng = np.random.default_rng(0)
    blurred = np.round((same + rest[rng.integers(len(rest), size=len(same))]) / 2)
    half = marker_agreement(held_out, rest, blurred, n_markers=10)
    assert half["sign_agreement"] == 1.0 and half["marker_recovery"] >= 0.7
    assert 0.6 < half["logfc_slope"] < 0.85
    # cells of the other types carry none of the type's markers
    wrong = marker_agreement(held_out, rest, rest[:100], n_markers=10)
    assert wrong["marker_recovery"] <= 0.2 and abs(wrong["logfc_slope"]) < 0.2
    # more markers asked for than genes: all genes
    assert marker_agreement(held_out, rest, same, n_markers=500)["n_markers"] == 100


def test_marker_agreement_checks_its_input(marked_type):
    held_out, same, rest, _ = marked_type
    with pytest.raises(ValueError, match="`real_type` has 100 genes .* `synthetic_type` has 99"):
        marker_agreement(held_out, rest, same[:, :99])
    with pytest.raises(ValueError, match="`synthetic_type` is not raw counts"):
        marker_agreement(held_out, rest, same + 0.5)
    with pytest.raises(InvalidParameterError, match="'n_markers'"):
        marker_agreement(held_out, rest, same, n_markers=1)
    with pytest.raises(InvalidParameterError, match="'pseudocount'"):
        log_fold_change(held_out, rest, pseudocount=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        same_as_rest = marker_agreement(rest, rest, same)  # the "type" is the rest: no markers
    assert np.isnan(same_as_rest["logfc_correlation"])
    assert any(issubclass(w.category, DegenerateInputWarning) for w in caught)
