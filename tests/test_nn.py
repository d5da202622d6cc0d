"""The pure modules: the NB likelihood against scipy, the decoder's draws against their moments."""

import numpy as np
import pytest
import torch
from scipy import stats

from scaug.nn import AutoencoderModule, Denoiser, LatentClassifier
from scaug.nn.autoencoder_module import nb_log_likelihood


def test_nb_log_likelihood_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, size=200).astype(np.float64)
    mu = rng.uniform(0.01, 40, size=200)
    theta = rng.uniform(0.05, 20, size=200)
    ours = nb_log_likelihood(torch.tensor(x), torch.tensor(mu), torch.tensor(theta)).numpy()
    # scipy's nbinom(n, p): n = theta, p = theta / (theta + mu) has mean mu
    ref = stats.nbinom.logpmf(x, theta, theta / (theta + mu))
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


def test_nb_draws_have_the_likelihoods_mean_and_variance():
    torch.manual_seed(0)
    m = AutoencoderModule(n_genes=5, n_latent=2, hidden=(8,), likelihood="nb")
    with torch.no_grad():
        m.gene_log_scale.copy_(torch.log(torch.tensor([0.5, 1.0, 2.0, 5.0, 50.0])))
    z = torch.zeros(40000, 2)
    library = torch.full((40000,), 200.0)
    x = m.sample_expression(z, library, generator=torch.Generator().manual_seed(0)).numpy()
    with torch.no_grad():
        mu = (200.0 * torch.softmax(m.decode(z[:1]), -1)).numpy()[0]
    theta = np.array([0.5, 1.0, 2.0, 5.0, 50.0])
    np.testing.assert_allclose(x.mean(0), mu, rtol=0.05)
    np.testing.assert_allclose(x.var(0), mu + mu**2 / theta, rtol=0.1)
    assert np.array_equal(x, np.round(x)) and x.min() >= 0
    again = m.sample_expression(z, library, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(again.numpy(), x)


def test_gaussian_head_returns_the_input_scale():
    m = AutoencoderModule(n_genes=3, n_latent=2, hidden=(8,), likelihood="gaussian")
    with torch.no_grad():
        m.gene_mean.copy_(torch.tensor([10.0, 0.0, -5.0]))
        m.gene_scale.copy_(torch.tensor([2.0, 1.0, 0.5]))
        m.gene_log_scale.fill_(-20.0)  # no noise: the draw is the decoded mean
    z = torch.zeros(4, 2)
    x = m.sample_expression(z, None, generator=torch.Generator().manual_seed(0))
    expected = m.decode(z).detach() * m.gene_scale + m.gene_mean
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(m.standardise(m.gene_mean[None]), torch.zeros(1, 3))


@pytest.mark.parametrize("n_classes", [1, 4])
def test_denoiser_and_classifier_shapes(n_classes):
    d = Denoiser(n_latent=6, n_classes=n_classes, width=16, depth=2)
    z, t = torch.randn(10, 6), torch.rand(10)
    y = torch.randint(0, n_classes + 1, (10,))  # index n_classes is the null label
    assert d(z, t, y).shape == (10, 6)
    c = LatentClassifier(n_latent=6, n_classes=n_classes, width=16)
    assert c(z, t).shape == (10, n_classes)


@pytest.mark.parametrize("case", ["one condition", "times", "labels and attributes", "empty"])
def test_unique_conditions_matches_torch_unique_rows(case):
    from scaug.nn.denoiser import unique_conditions

    g = torch.Generator().manual_seed(0)
    n = 0 if case == "empty" else 300
    t = torch.full((n,), 0.37) if case in ("one condition", "labels and attributes") else \
        torch.randint(0, 7, (n,), generator=g).float() / 7
    y = torch.full((n,), 2) if case == "one condition" else torch.randint(0, 4, (n,), generator=g)
    if case == "labels and attributes":
        y = torch.stack([y, torch.randint(0, 3, (n,), generator=g),
                         torch.randint(0, 5, (n,), generator=g)], dim=1)
    unique, inverse = unique_conditions(t, y)
    key = torch.cat([t[:, None], (y[:, None] if y.ndim == 1 else y).float()], dim=1)
    ref_unique, ref_inverse = torch.unique(key, dim=0, return_inverse=True)
    assert torch.equal(unique, ref_unique)
    assert torch.equal(inverse, ref_inverse)
    assert torch.equal(unique[inverse], key)  # every row is recovered from its index


def test_detection_offsets_match_each_genes_detection_rate():
    torch.manual_seed(0)
    module = AutoencoderModule(30, 3, (16,)).eval()
    rng = np.random.default_rng(0)
    # counts more often nonzero than the module's dispersion (theta = 1) expects: Poisson-like
    x = torch.as_tensor(rng.poisson(rng.gamma(2.0, 0.4, size=(500, 30))), dtype=torch.float32)
    x[:, 0] = 0
    x[:3, 0] = 1  # detected in 3 cells: too few to match, kept as it is
    with torch.no_grad():  # a decoder with each gene's mean share: every rate is reachable
        module.decoder[-1].weight.zero_()
        module.decoder[-1].bias.copy_(torch.log(x.sum(0) / x.sum()))
    offsets = module.detection_offsets(x)
    assert offsets[0] == 0
    z = module.encode(module.transform_input(x))
    with torch.no_grad():
        mu, theta = module.nb_parameters(z, x.sum(1))
        th = theta * torch.exp(offsets)
        expected = (1 - (th / (th + mu)) ** th).mean(0)
        before = (1 - (theta / (theta + mu)) ** theta).mean(0)
    observed = (x > 0).float().mean(0)
    np.testing.assert_allclose(expected[1:], observed[1:], atol=1e-4)
    assert (before[1:] < observed[1:]).all() and (offsets[1:] > 0).all()
    with pytest.raises(ValueError, match="NB likelihood"):
        AutoencoderModule(30, 3, (16,), likelihood="gaussian").detection_offsets(x)
