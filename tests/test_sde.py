"""SDE / CPS / DDIM steps against hand-worked values and direct Gaussian computations; the ratio-1 invariant."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from imgpref.sampling import (
    cps_step,
    ddim_deterministic_step,
    ddim_step,
    euler_step,
    gaussian_kl_same_std,
    gaussian_log_prob,
    sde_step,
)

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _normal_log_prob(x_next: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Direct computation with torch.distributions, averaged over non-batch dims, in float64."""
    scale = std.double().reshape(-1, *([1] * (mean.ndim - 1))).expand_as(mean)
    return Normal(mean.double(), scale).log_prob(x_next.double()).flatten(1).mean(1)


def test_sde_step_scalar_hand_value():
    # σ = 0.5, σ' = 0.25, a = 0.7: s_t² = 0.49 · 0.5/0.5 = 0.49, Δ = −0.25.
    # μ = 1·(1 + 0.49/1·(−0.25)) + 2·(1 + 0.49·0.5/1)·(−0.25) = 0.8775 − 0.6225 = 0.255
    # s = 0.7 · sqrt(0.25) = 0.35; with z = 1: x' = 0.605, log-prob = −½ − log 0.35 − ½ log 2π.
    x, v, z = torch.tensor([[1.0]]), torch.tensor([[2.0]]), torch.tensor([[1.0]])
    x_next, mean, log_prob, std = sde_step(x, v, 0.5, 0.25, noise=z)
    assert mean.item() == pytest.approx(0.255, abs=1e-6)
    assert std.tolist() == pytest.approx([0.35])
    assert x_next.item() == pytest.approx(0.605, abs=1e-6)
    assert log_prob.item() == pytest.approx(-0.5 - math.log(0.35) - HALF_LOG_2PI, abs=1e-5)


def test_sde_step_against_direct_gaussian_per_sample_levels():
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    z = torch.randn(2, 3, 4, 4, generator=g)
    sigma, sigma_next, a = torch.tensor([0.8, 0.5]), torch.tensor([0.7, 0.3]), 0.9
    x_next, mean, log_prob, std = sde_step(x, v, sigma, sigma_next, noise_level=a, noise=z)

    xd, vd = x.double(), v.double()
    expected_mean, expected_std = [], []
    for i, (s, sn) in enumerate(zip(sigma.tolist(), sigma_next.tolist(), strict=True)):
        dt = sn - s
        st2 = a**2 * s / (1 - s)
        expected_mean.append(xd[i] * (1 + st2 / (2 * s) * dt) + vd[i] * (1 + st2 * (1 - s) / (2 * s)) * dt)
        expected_std.append(math.sqrt(st2) * math.sqrt(-dt))
    expected_mean = torch.stack(expected_mean)
    torch.testing.assert_close(mean.double(), expected_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(std.double(), torch.tensor(expected_std, dtype=torch.float64), rtol=1e-6, atol=0)
    expected_next = expected_mean + torch.tensor(expected_std).double().reshape(2, 1, 1, 1) * z
    torch.testing.assert_close(x_next.double(), expected_next, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(log_prob.double(), _normal_log_prob(x_next, mean, std), rtol=1e-5, atol=1e-5)


def test_sde_step_at_pure_noise_uses_next_level_in_denominator():
    # σ = 1, σ' = 0.9: s_t = a · sqrt(1 / (1 − 0.9)); the (1 − σ) in the mean stays 0.
    x, v = torch.tensor([[2.0, -1.0]]), torch.tensor([[0.5, 1.5]])
    _, mean, log_prob, std = sde_step(x, v, 1.0, 0.9, noise=torch.zeros(1, 2))
    st2 = 0.49 / 0.1
    torch.testing.assert_close(mean, x * (1 + st2 / 2 * -0.1) + v * -0.1)
    assert std.item() == pytest.approx(math.sqrt(st2) * math.sqrt(0.1), rel=1e-6)
    assert torch.isfinite(log_prob).all()


def test_sde_step_small_noise_is_the_euler_step():
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    _, mean, _, _ = sde_step(x, v, 0.6, 0.4, noise_level=1e-4)
    torch.testing.assert_close(mean, x + v * (0.4 - 0.6), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ratio_is_exactly_one_on_policy(dtype):
    """Scoring the sampled x' again with identical inputs gives bit-identical log-probs, for every step."""
    g = torch.Generator().manual_seed(2)
    x, out = torch.randn(2, 4, 3, 3, generator=g).to(dtype), torch.randn(2, 4, 3, 3, generator=g).to(dtype)
    steps = [
        lambda **kw: sde_step(x, out, torch.tensor([1.0, 0.7]), torch.tensor([0.9, 0.5]), **kw),
        lambda **kw: cps_step(x, out, 0.7, 0.5, **kw),
        lambda **kw: cps_step(x, out, 0.7, 0.5, log_prob_form="flow_cps", **kw),
        lambda **kw: ddim_step(x, out, 0.3, 0.5, **kw),
        lambda **kw: ddim_step(
            x, out, torch.tensor([0.3, 0.6]), torch.tensor([0.5, 0.9]), prediction="v_prediction", **kw
        ),
    ]
    for step in steps:
        x_next, mean, log_prob, std = step(generator=torch.Generator().manual_seed(3))
        assert x_next.dtype == mean.dtype == log_prob.dtype == torch.float32
        again_next, again_mean, again_log_prob, again_std = step(prev_sample=x_next)
        assert torch.equal(again_log_prob, log_prob)
        assert torch.equal(again_mean, mean) and torch.equal(again_next, x_next) and torch.equal(again_std, std)
        assert torch.exp(again_log_prob - log_prob).eq(1).all()
        # Same seed, same draw; another seed, another draw.
        assert torch.equal(step(generator=torch.Generator().manual_seed(3))[0], x_next)
        assert not torch.equal(step(generator=torch.Generator().manual_seed(4))[0], x_next)


def test_shape_agnostic_and_zero_noise_returns_mean():
    for shape in [(2, 7), (2, 16, 8), (2, 4, 6, 6), (2, 2, 3, 4, 4)]:
        g = torch.Generator().manual_seed(5)
        x, v = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        x_next, mean, log_prob, std = sde_step(x, v, 0.5, 0.4, noise=torch.zeros(shape))
        assert torch.equal(x_next, mean) and log_prob.shape == (2,) and std.shape == (2,)
        # At the mean the log-density is its maximum, −log s − ½ log 2π.
        torch.testing.assert_close(log_prob, -torch.log(std) - HALF_LOG_2PI)


def test_kl_zero_for_identical_means_and_matches_torch():
    g = torch.Generator().manual_seed(6)
    mean = torch.randn(3, 2, 4, 4, generator=g)
    std = torch.tensor([0.3, 0.5, 0.9])
    assert torch.equal(gaussian_kl_same_std(mean, mean.clone(), std), torch.zeros(3))
    # Means differing by 1 everywhere, s = 0.5: 1/(2 · 0.25) = 2 per element.
    assert gaussian_kl_same_std(torch.zeros(2, 5), torch.ones(2, 5), 0.5).tolist() == [2.0, 2.0]
    other = mean + 0.1 * torch.randn(3, 2, 4, 4, generator=g)
    scale = std.reshape(3, 1, 1, 1).expand_as(mean)
    expected = kl_divergence(Normal(mean, scale), Normal(other, scale)).flatten(1).mean(1)
    torch.testing.assert_close(gaussian_kl_same_std(mean, other, std), expected)


def test_gaussian_log_prob_matches_torch_and_rejects_zero_std():
    g = torch.Generator().manual_seed(7)
    x, mean = torch.randn(4, 3, 5, generator=g), torch.randn(4, 3, 5, generator=g)
    std = torch.tensor([0.1, 0.5, 1.0, 2.0])
    torch.testing.assert_close(gaussian_log_prob(x, mean, std).double(), _normal_log_prob(x, mean, std))
    with pytest.raises(ValueError, match="deterministic"):
        gaussian_log_prob(x, mean, torch.tensor([0.1, 0.0, 1.0, 1.0]))


def test_cps_step_hand_values_and_preserved_coefficients():
    """With the exact velocity v = ε − x₀ at x = (1−σ)x₀ + σε, CPS's mean is (1−σ')x₀ + σ' cos(aπ/2) ε and
    its std σ' sin(aπ/2): the noise coefficients have norm σ' (cos² + sin² = 1)."""
    g = torch.Generator().manual_seed(8)
    x0, eps = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    sigma, sigma_next, a = 0.8, 0.6, 0.7
    x = (1 - sigma) * x0 + sigma * eps
    x_next, mean, log_prob, std = cps_step(x, eps - x0, sigma, sigma_next, noise_level=a, noise=torch.ones(2, 3, 4))
    c, s = math.cos(a * math.pi / 2), math.sin(a * math.pi / 2)
    torch.testing.assert_close(mean, (1 - sigma_next) * x0 + sigma_next * c * eps, rtol=1e-5, atol=1e-5)
    assert std.tolist() == pytest.approx([sigma_next * s] * 2)
    torch.testing.assert_close(x_next, mean + sigma_next * s)
    torch.testing.assert_close(log_prob.double(), _normal_log_prob(x_next, mean, std))

    _, _, cps_form, _ = cps_step(
        x, eps - x0, sigma, sigma_next, noise_level=a, noise=torch.ones(2, 3, 4), log_prob_form="flow_cps"
    )
    torch.testing.assert_close(cps_form, torch.full((2,), -((sigma_next * s) ** 2)))


def test_cps_step_to_zero_is_deterministic():
    x, v = torch.randn(2, 3), torch.randn(2, 3)
    x_next, mean, log_prob, std = cps_step(x, v, 0.2, 0.0, log_prob_form="flow_cps")
    assert torch.equal(x_next, mean) and std.tolist() == [0.0, 0.0] and log_prob.tolist() == [0.0, 0.0]
    torch.testing.assert_close(mean, x - 0.2 * v)  # x̂₀
    with pytest.raises(ValueError, match="deterministic"):
        cps_step(x, v, 0.2, 0.0)


def test_ddim_step_hand_value():
    # ᾱ_t = 0.64, ᾱ_prev = 0.81, η = 1, ε-prediction, x = 1, ε̂ = 0.5:
    # x̂₀ = (1 − 0.6·0.5)/0.8 = 0.875; s² = (0.19/0.36)(1 − 0.64/0.81); μ = 0.9·x̂₀ + sqrt(0.19 − s²)·ε̂.
    var = (0.19 / 0.36) * (1 - 0.64 / 0.81)
    expected_mean = 0.9 * 0.875 + math.sqrt(0.19 - var) * 0.5
    x_next, mean, log_prob, std = ddim_step(
        torch.tensor([[1.0]]), torch.tensor([[0.5]]), 0.64, 0.81, noise=torch.tensor([[-2.0]])
    )
    assert mean.item() == pytest.approx(expected_mean, rel=1e-6)
    assert std.item() == pytest.approx(math.sqrt(var), rel=1e-6)
    assert x_next.item() == pytest.approx(expected_mean - 2 * math.sqrt(var), rel=1e-6)
    assert log_prob.item() == pytest.approx(-2.0 - math.log(math.sqrt(var)) - HALF_LOG_2PI, rel=1e-6)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddim_step_matches_diffusers_scheduler(prediction):
    from diffusers import DDIMScheduler

    # SD 1.5's scheduler settings: with steps_offset=1 the last step goes from t = 1 to ᾱ_0, still stochastic.
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction,
    )
    scheduler.set_timesteps(20)
    g = torch.Generator().manual_seed(9)
    x, out, z = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    for t in (scheduler.timesteps[0], scheduler.timesteps[10], scheduler.timesteps[-1]):
        prev = int(t) - 1000 // 20
        a_t = scheduler.alphas_cumprod[int(t)]
        a_prev = scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod
        reference = scheduler.step(out, t, x, eta=1.0, variance_noise=z).prev_sample
        x_next, mean, log_prob, std = ddim_step(x, out, a_t, a_prev, prediction=prediction, noise=z)
        torch.testing.assert_close(x_next, reference, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(log_prob.double(), _normal_log_prob(x_next, mean, std), rtol=1e-5, atol=1e-5)
    # Without the offset the last step goes from ᾱ_0 to ᾱ_0: zero variance, no log-prob.
    with pytest.raises(ValueError, match="alpha_prod_t"):
        ddim_step(x, out, scheduler.alphas_cumprod[0], scheduler.final_alpha_cumprod, prediction=prediction)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddim_deterministic_step_matches_diffusers_with_eta_zero(prediction):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, prediction_type=prediction
    )
    scheduler.set_timesteps(10)
    g = torch.Generator().manual_seed(4)
    x, out = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    t = scheduler.timesteps[3]
    a_t, a_prev = scheduler.alphas_cumprod[int(t)], scheduler.alphas_cumprod[int(t) - 100]
    reference = scheduler.step(out, t, x, eta=0.0).prev_sample
    torch.testing.assert_close(ddim_deterministic_step(x, out, a_t, a_prev, prediction=prediction), reference)


def test_euler_step_matches_diffusers_flow_match_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
    scheduler.set_timesteps(8)
    g = torch.Generator().manual_seed(5)
    x, v = torch.randn(3, 16, 4, generator=g), torch.randn(3, 16, 4, generator=g)
    reference = scheduler.step(v, scheduler.timesteps[2], x).prev_sample
    sigma, sigma_next = scheduler.sigmas[2], scheduler.sigmas[3]
    torch.testing.assert_close(euler_step(x, v, sigma, sigma_next), reference)
    per_sample = euler_step(x, v, torch.tensor([sigma, sigma, 1.0]), sigma_next)
    assert torch.equal(per_sample[:2], euler_step(x, v, sigma, sigma_next)[:2])


def test_steps_reject_bad_inputs():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="sigma_next"):
        sde_step(x, x, 0.5, 0.5)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        sde_step(x, x, 1.5, 0.5)
    with pytest.raises(ValueError, match="not both"):
        sde_step(x, x, 0.5, 0.4, prev_sample=x, noise=x)
    with pytest.raises(ValueError, match="per-sample"):
        sde_step(x, x, torch.tensor([0.5, 0.6, 0.7]), 0.4)
    with pytest.raises(ValueError, match="eta"):
        ddim_step(x, x, 0.3, 0.5, eta=0.0)
    with pytest.raises(ValueError, match="alpha_prod_t"):
        ddim_step(x, x, 0.5, 0.3)
    with pytest.raises(ValueError, match="noise_level"):
        cps_step(x, x, 0.5, 0.4, noise_level=1.5)
