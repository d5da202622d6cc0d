"""scvi-tools' scVI and scANVI as augmenters of the benchmark suite (benchmarks/_peers.py):
skipped without the optional dependency, and the right cells when it is there."""

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import _peers  # noqa: E402
import _suite as S  # noqa: E402


def test_peers_are_dropped_with_a_message_without_scvi(monkeypatch, capsys):
    monkeypatch.setattr(_peers, "missing", lambda: "scVI and scANVI skipped: no scvi-tools")
    assert S.drop_unavailable(["none", "scVI", "SCLD", "scANVI"]) == ["none", "SCLD"]
    assert "skipped" in capsys.readouterr().out
    assert S.PEERS == ["scVI", "scANVI"]
    for name in S.PEERS:  # scvi-tools' defaults, stated
        assert S.REGISTRY[name]["gene_likelihood"] == "nb" and "default" in \
            S.REGISTRY[name]["max_epochs"]


def _cells(seed=0, sizes=(40, 20, 8), n_genes=30):
    rng = np.random.default_rng(seed)
    means = rng.gamma(2.0, 2.0, size=(len(sizes), n_genes))
    X = np.concatenate([rng.poisson(means[k], size=(n, n_genes)) for k, n in enumerate(sizes)])
    y = np.repeat(np.array([f"type_{k}" for k in range(len(sizes))]), sizes)
    return sp.csr_matrix(X.astype(np.float32)), y


@pytest.mark.parametrize("name", ["scVI", "scANVI"])
def test_peer_makes_integer_counts_of_the_requested_types(name):
    pytest.importorskip("scvi")
    X, y = _cells()
    strategy = {"type_1": 40, "type_2": 40}  # 20 and 32 cells to make
    fits = S.Fits(X, y, seed=0, device="cpu")
    syn = S.synthesize(name, S.setting(name, quick=False), fits, X, y, strategy, seed=0)
    assert syn["space"] == "counts"
    assert sorted(np.unique(syn["y"], return_counts=True)[1]) == [20, 32]
    assert syn["y"].dtype == y.dtype and syn["X"].shape == (52, X.shape[1])
    counts = syn["X"].toarray()
    assert (counts >= 0).all() and np.array_equal(counts, np.round(counts))
    assert syn["ae_fit_s"] > 0 and syn["sample_s"] >= 0
    if name == "scANVI":
        agreement = syn["diagnostics"]["prior_label_agreement"]
        assert set(agreement) == {"type_1", "type_2"}
        assert all(0.0 <= v <= 1.0 for v in agreement.values())
