"""The diffusion process against an analytic case: Gaussian data and its exact denoiser.

For z0 ~ N(mu, s^2) per dimension, E[z0 | z_t] = mu + a s^2 / (a^2 s^2 + sigma^2) (z_t - a mu),
with a = sqrt(abar_t) and sigma = sqrt(1 - abar_t); the exact v-prediction is
(a z_t - E[z0 | z_t]) / sigma. Every sampler run with it must return the data distribution.
"""

import numpy as np
import pytest
import torch

from scaug.diffusion import SAMPLERS, GaussianDiffusion, cosine_alpha_bar

MU = torch.tensor([2.0, -1.0, 0.0])
SD = torch.tensor([0.5, 1.5, 1.0])


class ExactDenoiser(torch.nn.Module):
    """The exact v-prediction of Gaussian data; label 1 shifts the mean (a second 'type')."""

    def __init__(self, diffusion, shift=3.0):
        super().__init__()
        self.diffusion, self.shift = diffusion, shift

    def forward(self, z_t, t, y):
        step = torch.round(t * self.diffusion.n_steps).long()
        abar = self.diffusion.alpha_bar[step].float()[:, None]
        a, sigma = abar.sqrt(), (1 - abar).sqrt()
        mu = MU + self.shift * (y[:, None] == 1).float()
        x0 = mu + a * SD**2 / (a**2 * SD**2 + sigma**2) * (z_t - a * mu)
        return (a * z_t - x0) / sigma


@pytest.mark.parametrize(("method", "steps", "tol"), [("ddim", 50, 0.05), ("ancestral", 100, 0.06),
                                                       ("dpm-solver++", 15, 0.05)])
def test_samplers_recover_gaussian_data(method, steps, tol):
    diffusion = GaussianDiffusion(1000)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn((20000, 3), generator=gen)
    y = torch.zeros(20000, dtype=torch.long)
    z = diffusion.sample(ExactDenoiser(diffusion), y, noise, null_label=2, n_sample_steps=steps,
                         method=method, step_noise=lambda shape: torch.randn(shape, generator=gen))
    np.testing.assert_allclose(z.mean(0), MU, atol=tol)
    np.testing.assert_allclose(z.std(0), SD, rtol=2 * tol)


def test_dpm_solver_is_closer_than_ddim_at_few_steps():
    diffusion = GaussianDiffusion(1000)
    noise = torch.randn((20000, 3), generator=torch.Generator().manual_seed(1))
    y = torch.zeros(20000, dtype=torch.long)
    err = {}
    for method in ("ddim", "dpm-solver++"):
        z = diffusion.sample(ExactDenoiser(diffusion), y, noise, null_label=2, n_sample_steps=8,
                             method=method)
        err[method] = float((z.std(0) - SD).abs().max())
    assert err["dpm-solver++"] < err["ddim"]


def test_guidance_scale_one_is_the_conditional_model_and_zero_the_null_label():
    diffusion = GaussianDiffusion(1000)
    noise = torch.randn((5000, 3), generator=torch.Generator().manual_seed(2))
    y = torch.ones(5000, dtype=torch.long)
    model = ExactDenoiser(diffusion)
    cond = diffusion.sample(model, y, noise, null_label=0, guidance_scale=1.0, n_sample_steps=30)
    np.testing.assert_allclose(cond.mean(0), MU + 3.0, atol=0.06)
    # null label 0 is the unshifted 'type': w = 0 samples it
    uncond = diffusion.sample(model, y, noise, null_label=0, guidance_scale=0.0, n_sample_steps=30)
    np.testing.assert_allclose(uncond.mean(0), MU, atol=0.06)
    # w = 2 extrapolates past the conditional mean
    pushed = diffusion.sample(model, y, noise, null_label=0, guidance_scale=2.0, n_sample_steps=30)
    assert (pushed.mean(0) > cond.mean(0) + 1.0).all()


def test_forward_process_and_schedule():
    abar = cosine_alpha_bar(1000)
    assert np.all(np.diff(abar) <= 0) and abar[-1] >= 1e-4 and abar[0] < 1  # floored at the end
    diffusion = GaussianDiffusion(1000)
    z0 = torch.full((100000, 1), 2.0)
    t = torch.full((100000,), 500)
    z = diffusion.q_sample(z0, t, torch.randn(z0.shape, generator=torch.Generator().manual_seed(0)))
    a = float(diffusion.alpha_bar[500]) ** 0.5
    np.testing.assert_allclose(float(z.mean()), 2.0 * a, atol=0.01)
    np.testing.assert_allclose(float(z.std()), (1 - a**2) ** 0.5, rtol=0.01)


def test_unknown_method_is_refused():
    diffusion = GaussianDiffusion(10)
    with pytest.raises(ValueError, match="method must be one of"):
        diffusion.sample(ExactDenoiser(diffusion), torch.zeros(2, dtype=torch.long),
                         torch.zeros(2, 3), null_label=2, method="euler")
    assert "dpm-solver++" in SAMPLERS


def test_start_step_keeps_what_the_noise_has_not_covered():
    diffusion = GaussianDiffusion(1000)
    gen = torch.Generator().manual_seed(3)
    model = ExactDenoiser(diffusion)
    z0 = MU + 3.0 + SD * torch.randn((20000, 3), generator=gen)  # the data of label 1
    means = {}
    for start in (100, 400, 1000):
        t = torch.full((len(z0),), start, dtype=torch.long)
        z_t = diffusion.q_sample(z0, t, torch.randn(z0.shape, generator=gen))
        # with its own label the exact model returns the data distribution from any time
        same = diffusion.sample(model, torch.ones(len(z0), dtype=torch.long), z_t, null_label=2,
                                n_sample_steps=30, start_step=start)
        np.testing.assert_allclose(same.mean(0), MU + 3.0, atol=0.05)
        np.testing.assert_allclose(same.std(0), SD, rtol=0.1)
        # with label 0 the part the noise covered moves toward label 0's data, and only that part
        other = diffusion.sample(model, torch.zeros(len(z0), dtype=torch.long), z_t, null_label=2,
                                 n_sample_steps=30, start_step=start)
        means[start] = float((other.mean(0) - MU).mean())
    assert 3.0 > means[100] > means[400] > means[1000], means  # 3.0: where the data started
    assert abs(means[1000]) < 0.05  # from time T: label 0's data whatever the start
    with pytest.raises(ValueError, match="start_step"):
        diffusion.sample(model, torch.zeros(2, dtype=torch.long), z0[:2], null_label=2,
                         start_step=0)
