"""Wrapped normal distributions (curvature -c, c > 0): worked examples, normalisation,
Jacobian, agreement of the two models, sample moments, the Euclidean limit, mixtures,
gradients, bad input.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hyro_edu import lorentz as L
from hyro_edu import poincare as P
from hyro_edu import wrapped_normal as W

from .conftest import TOL

F64 = torch.float64


def t64(*values):
    return torch.tensor(values, dtype=F64)


# ----------------------------------------------------------------------------
# log(sinh(x)/x)
# ----------------------------------------------------------------------------
def _mp_log_sinhc(x: float) -> float:
    with mpmath.workdps(150):  # 1 + x²/6 must be resolved down to x = 1e-18
        x = mpmath.mpf(x)
        return 0.0 if x == 0 else float(mpmath.log(mpmath.sinh(x) / x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_sinhc_matches_mpmath(dtype):
    eps = torch.finfo(dtype).eps
    x0 = W.log_sinhc_switch(dtype)
    sw = torch.tensor(x0, dtype=dtype)
    xs = torch.cat(
        [
            torch.logspace(-18, 30, 200, dtype=F64).to(dtype),  # x² stays a normal float32 number
            torch.linspace(0.5 * x0, 2 * x0, 101, dtype=F64).to(dtype),
            torch.nextafter(sw, torch.tensor(0.0, dtype=dtype)).reshape(1),
            sw.reshape(1),
            torch.nextafter(sw, torch.tensor(10.0, dtype=dtype)).reshape(1),
        ]
    )
    got = W.log_sinhc(xs).double()
    ref = torch.tensor([_mp_log_sinhc(float(v)) for v in xs], dtype=F64)
    rel = (got - ref).abs() / ref.abs()
    # error analysis in W.log_sinhc_switch: the closed form just above x0 loses
    # 6·eps·(1 + |log 2x0|)/x0² (a difference of logs); a few eps of rounding elsewhere.
    bound = (6 * (1 + abs(math.log(2 * x0))) / x0**2 + 4) * eps
    assert rel.max().item() <= bound, (rel.max().item() / eps, xs[rel.argmax()].item())
    assert W.log_sinhc(torch.zeros(1, dtype=dtype)).item() == 0.0
    torch.testing.assert_close(W.log_sinhc(-xs), W.log_sinhc(xs))  # even


def test_log_sinhc_gradient():
    x = torch.cat([t64(0.0, 1e-12, 0.05, 0.19, 0.1910387874041468, 0.2, 0.7, 1.02, 3.0, 40.0)])
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(W.log_sinhc, (x[1:].detach().requires_grad_(True),))
    W.log_sinhc(x).sum().backward()
    assert x.grad[0].item() == 0.0
    # d/dx log(sinh x / x) = coth x - 1/x
    xs = x.detach()[1:]
    torch.testing.assert_close(x.grad[1:], 1 / torch.tanh(xs) - 1 / xs, rtol=1e-9, atol=1e-12)
    for dtype in (torch.float32, torch.float64):
        big = torch.tensor([0.0, 1e30, torch.finfo(dtype).max], dtype=dtype, requires_grad=True)
        out = W.log_sinhc(big)
        out.sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(big.grad).all()


# ----------------------------------------------------------------------------
# worked examples, normalisation, Jacobian
# ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "z, mu, sigma, c, expected",
    [
        ((0.5, 0.0), (0.0, 0.0), 1.0, 1.0, -2.634986),
        ((0.1, 0.4), (0.3, -0.2), 0.5, 1.0, -4.542683),
        ((0.1, 0.4), (0.3, -0.2), 0.5, 0.5, -4.073193),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reference_worked_examples(z, mu, sigma, c, expected, dtype):
    """pvae's formulas (Mathieu et al. 2019) at n = 2; the first is derived by hand below."""
    d = W.PoincareWrappedNormal(torch.tensor(mu, dtype=dtype), sigma, c=c)
    got = d.log_prob(torch.tensor(z, dtype=dtype)).item()
    assert got == pytest.approx(expected, abs=1e-6 if dtype == F64 else 2e-5)


def test_worked_example_breakdown():
    """z = (0.5, 0): r = ln 3 and log p = -log 2π - r²/2 - log((4/3)/ln 3)."""
    r = math.log(3)
    assert P.dist(torch.zeros(2, dtype=F64), t64(0.5, 0.0), c=1.0).item() == pytest.approx(
        r, abs=1e-12
    )
    expected = -math.log(2 * math.pi) - r**2 / 2 - math.log((4 / 3) / r)
    got = W.poincare_log_prob(t64(0.5, 0.0), torch.zeros(2, dtype=F64), 1.0, c=1.0).item()
    assert got == pytest.approx(expected, abs=1e-12)


def disk_integral(density, mu, c, smax, nr=100, nt=512):
    """∫ f(z) (λ_z)² dz over the disk, f = density(z) (e.g. p or g·p).

    Polar coordinates z = ρ(cos θ, sin θ), dz = ρ dρ dθ; with ρ = tanh(sqrt(c) R / 2) / sqrt(c)
    (R the hyperbolic radius), λ² ρ dρ = sinh(sqrt(c) R) / sqrt(c) dR.
    Gauss-Legendre in R on [0, Rad(μ) + 12 σ_max] (beyond it the density is below e^-72), the
    periodic trapezoid rule in θ.
    """
    rmax = P.radius(mu, c=c).item() + 12 * smax
    x, w = np.polynomial.legendre.leggauss(nr)
    R, w = torch.tensor((x + 1) / 2 * rmax), torch.tensor(w * rmax / 2)
    th = torch.arange(nt, dtype=F64) * 2 * math.pi / nt
    rho = torch.tanh(math.sqrt(c) * R / 2) / math.sqrt(c)
    z = torch.stack([rho[:, None] * th.cos(), rho[:, None] * th.sin()], -1)
    f = density(z) * (torch.sinh(math.sqrt(c) * R) / math.sqrt(c))[:, None]
    return ((f.mean(1) * 2 * math.pi) * w).sum().item()


@pytest.mark.parametrize(
    "c, sigma, mu",
    [
        (1.0, (0.5,), (0.3, -0.2)),  # the reference's pairs (c, σ)
        (0.5, (0.7,), (0.0, 0.0)),
        (0.5, (0.7,), (0.9, 0.5)),
        (2.0, (0.2, 0.9), (0.5, 0.3)),  # anisotropic
    ],
)
def test_density_integrates_to_one_on_the_disk(c, sigma, mu):
    mu, sigma = t64(*mu), t64(*sigma)
    d = W.PoincareWrappedNormal(mu, sigma, c=c)
    total = disk_integral(lambda z: d.log_prob(z).exp(), mu, c, sigma.max().item())
    assert total == pytest.approx(1.0, abs=1e-8)


def radial_integral(log_prob_at_radius, n, c, smax, nr=200):
    """∫ p dvol for an isotropic density centred at the origin of the n-ball.

    = ω_{n-1} ∫ p(R) (sinh(√c R)/√c)^{n-1} dR, ω_{n-1} the area of the unit sphere in R^n.
    """
    x, w = np.polynomial.legendre.leggauss(nr)
    rmax = 14 * smax
    R, w = torch.tensor((x + 1) / 2 * rmax), torch.tensor(w * rmax / 2)
    sphere = 2 * math.pi ** (n / 2) / math.gamma(n / 2)
    shell = sphere * (torch.sinh(math.sqrt(c) * R) / math.sqrt(c)) ** (n - 1)
    return (log_prob_at_radius(R).exp() * shell * w).sum().item()


@pytest.mark.parametrize("n, c, sigma", [(3, 1.0, 0.6), (3, 0.3, 1.2), (5, 2.0, 0.4)])
def test_exponent_n_minus_1_normalises_in_higher_dimensions(n, c, sigma):
    """The 2-D test cannot see the power n-1 (it is 1 there); 3-D and 5-D do.

    HVSA Eq. (3) as printed (power 1) integrates instead to E[(sinh(√c r)/(√c r))^(n-2)],
    which is exactly e^{cσ²/2} for n = 3 (a Gaussian integral: see chapter 7).
    """
    mu = torch.zeros(n, dtype=F64)

    def at_radius(R, convention):
        rho = torch.tanh(math.sqrt(c) * R / 2) / math.sqrt(c)
        z = torch.zeros(len(R), n, dtype=F64)
        z[:, 0] = rho
        return W.poincare_log_prob(z, mu, sigma, c=c, convention=convention)

    assert radial_integral(lambda R: at_radius(R, "mathieu"), n, c, sigma) == pytest.approx(
        1.0, abs=1e-9
    )
    hvsa = radial_integral(lambda R: at_radius(R, "hvsa_eq3"), n, c, sigma)
    if n == 3:
        assert hvsa == pytest.approx(math.exp(c * sigma**2 / 2), rel=1e-9)
    assert hvsa > 1.01


def test_hvsa_eq3_equals_mathieu_in_two_dimensions(gen):
    mu, z = t64(0.2, -0.4), P.expmap0(torch.randn(10, 2, dtype=F64, generator=gen), c=1.0)
    torch.testing.assert_close(
        W.poincare_log_prob(z, mu, 0.6, c=1.0, convention="hvsa_eq3"),
        W.poincare_log_prob(z, mu, 0.6, c=1.0),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("c", [0.3, 1.0, 2.5])
def test_log_det_is_the_jacobian_of_the_wrapping_map(n, c, gen):
    """det(dz/dv) · (λ_z)^n = (sinh(√c r)/(√c r))^(n-1).

    The left side is the Riemannian volume per unit tangent volume (autograd Jacobian).
    """
    mu = P.expmap0(0.4 * torch.randn(n, dtype=F64, generator=gen), c=c)
    for _ in range(3):
        v = 1.5 * torch.randn(n, dtype=F64, generator=gen)
        jac = torch.autograd.functional.jacobian(lambda t: W.poincare_wrap(mu, t, c=c), v)
        z = W.poincare_wrap(mu, v, c=c)
        lhs = torch.linalg.det(jac).log() + n * P.conformal_factor(z, c=c).log()
        rhs = W.log_det_expmap(v.norm(), c=c, n=n)
        assert lhs.item() == pytest.approx(rhs.item(), abs=1e-10)
        assert P.dist(mu, z, c=c).item() == pytest.approx(v.norm().item(), abs=1e-10)


def test_paper_form_equals_code_form():
    """Mathieu et al.: exp_μ(v / λ_μ); pvae code: exp_μ(P_{0→μ}(v / λ_0)).  The same map."""
    mu, v, c = t64(0.4, 0.5), t64(0.8, -1.1), 0.9
    code = P.expmap(mu, P.parallel_transport(torch.zeros(2, dtype=F64), mu, v / 2, c=c), c=c)
    torch.testing.assert_close(W.poincare_wrap(mu, v, c=c), code, rtol=0, atol=1e-15)


# ----------------------------------------------------------------------------
# the two models agree
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [(0.7,), (0.3, 1.1, 0.6)], ids=["isotropic", "diagonal"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_poincare_and_lorentz_agree_under_the_isometry(sigma, c, dtype, gen):
    mu_p = P.expmap0(0.5 * torch.randn(3, dtype=dtype, generator=gen) / c**0.5, c=c)
    sigma = torch.tensor(sigma, dtype=dtype) / c**0.5
    dp = W.PoincareWrappedNormal(mu_p, sigma, c=c)
    dl = W.LorentzWrappedNormal(L.from_poincare(mu_p, c=c), sigma, c=c)
    zp = dp.rsample((64,), generator=torch.Generator().manual_seed(7))
    zl = dl.rsample((64,), generator=torch.Generator().manual_seed(7))  # the same noise
    scale = 20 if dtype == torch.float32 else 1
    tol = {k: v * scale for k, v in TOL[dtype].items()}
    torch.testing.assert_close(L.to_poincare(zl, c=c), zp, **tol)
    torch.testing.assert_close(dl.log_prob(L.from_poincare(zp, c=c)), dp.log_prob(zp), **tol)


# ----------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------
N_SAMPLES = 20_000


def test_poincare_samples_have_the_implied_tangent_moments():
    """log_μ(z) = v / λ_μ with v ~ N(0, diag σ²): mean 0, covariance diag(σ²)/λ_μ².

    Tolerances: 5 standard errors of the estimators at N = 20000 (mean: s/√N;
    covariance entry (i, j): sqrt(Σ_ii Σ_jj + Σ_ij²)/√N).
    """
    c = 0.8
    mu, sigma = t64(0.35, -0.5, 0.2), t64(0.3, 0.9, 0.5)
    z = W.PoincareWrappedNormal(mu, sigma, c=c).rsample(
        (N_SAMPLES,), generator=torch.Generator().manual_seed(3)
    )
    u = P.logmap(mu, z, c=c)
    lam = P.conformal_factor(mu, c=c).item()
    cov = torch.diag(sigma**2) / lam**2
    se_mean = cov.diagonal().sqrt() / math.sqrt(N_SAMPLES)
    assert (u.mean(0).abs() <= 5 * se_mean).all(), (u.mean(0), se_mean)
    emp = torch.cov(u.T)
    se_cov = (cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2).sqrt() / math.sqrt(
        N_SAMPLES
    )
    assert ((emp - cov).abs() <= 5 * se_cov).all(), (emp, cov)


def test_lorentz_samples_have_the_implied_tangent_moments():
    """log_μ(z) = PT_{o→μ}((0, v)): mean 0, covariance J diag(0, σ²) Jᵀ (J: transport matrix)."""
    c, n = 1.5, 3
    mu = L.expmap0(t64(0.6, -0.3, 0.4), c=c)
    sigma = t64(0.4, 0.8, 0.2)
    z = W.LorentzWrappedNormal(mu, sigma, c=c).rsample(
        (N_SAMPLES,), generator=torch.Generator().manual_seed(4)
    )
    u = L.logmap(mu, z, c=c)
    o = L.origin(n, c=c, dtype=F64)
    jac = torch.stack(
        [L.parallel_transport(o, mu, e, c=c) for e in torch.eye(n + 1, dtype=F64)], dim=1
    )
    cov = jac @ torch.diag(torch.cat([t64(0.0), sigma**2])) @ jac.T
    se_mean = cov.diagonal().sqrt() / math.sqrt(N_SAMPLES)
    assert (u.mean(0).abs() <= 5 * se_mean).all()
    emp = torch.cov(u.T)
    se_cov = (cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2).sqrt() / math.sqrt(
        N_SAMPLES
    )
    assert ((emp - cov).abs() <= 5 * se_cov).all(), (emp, cov)
    torch.testing.assert_close(
        L.inner(mu.expand_as(u), u), torch.zeros(N_SAMPLES, dtype=F64), rtol=0, atol=1e-10
    )


def test_samples_follow_the_density():
    """Sampler and density are consistent: E[g(z)] over samples equals ∫ g p dvol by quadrature.

    g(z) = (z_1, z_2, ‖z‖²) in ball coordinates, a non-linear function of the tangent noise.
    Tolerance: 5 standard errors at N = 20000.
    """
    c, mu, sigma = 1.0, t64(0.3, -0.2), t64(0.5, 0.3)
    d = W.PoincareWrappedNormal(mu, sigma, c=c)
    z = d.rsample((N_SAMPLES,), generator=torch.Generator().manual_seed(5))

    def g(zz):
        return torch.stack([zz[..., 0], zz[..., 1], (zz * zz).sum(-1)], -1)

    for k in range(3):
        expected = disk_integral(
            lambda zz: g(zz)[..., k] * d.log_prob(zz).exp(), mu, c, sigma.max().item()
        )
        got = g(z)[:, k]
        se = got.std().item() / math.sqrt(N_SAMPLES)
        assert abs(got.mean().item() - expected) <= 5 * se, (k, got.mean().item(), expected, se)


# ----------------------------------------------------------------------------
# the Euclidean limit c -> 0
# ----------------------------------------------------------------------------
def _gauss(x, mean, std):
    return (-0.5 * ((x - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def test_poincare_euclidean_limit(gen):
    """As c -> 0 with the same v: z -> μ + v/2, so N_W(μ, σ) -> N(μ, diag σ²/4) in the ball.

    The Riemannian volume tends to 2^n dz (λ -> 2), so log p_W -> log N(z; μ, σ²/4) - n log 2.
    Both gaps are O(c) with a fixed constant: gap/c is the same at c = 1e-4, 1e-6, 1e-8.
    """
    n = 3
    mu, sigma = t64(0.4, -0.7, 0.1), t64(0.5, 1.0, 0.25)
    v = torch.randn(50, n, dtype=F64, generator=gen) * sigma
    per_c = []
    for c in (1e-4, 1e-6, 1e-8):
        z = W.poincare_wrap(mu, v, c=c)
        sample_gap = (z - (mu + v / 2)).abs().max().item()
        lp = W.poincare_log_prob(z, mu, sigma, c=c)
        density_gap = (lp + n * math.log(2) - _gauss(z, mu, sigma / 2)).abs().max().item()
        per_c.append((sample_gap / c, density_gap / c))
    for k in range(2):
        ratios = [g[k] for g in per_c]
        assert max(ratios) / min(ratios) < 1.05, per_c


def test_lorentz_euclidean_limit(gen):
    """Nagano's convention has no factor 2: z_s -> μ_s + v and the density -> N(μ_s, σ²)."""
    n = 3
    mu_s, sigma = t64(0.4, -0.7, 0.1), t64(0.5, 1.0, 0.25)
    v = torch.randn(50, n, dtype=F64, generator=gen) * sigma
    per_c = []
    for c in (1e-4, 1e-6, 1e-8):
        mu = L.lift(mu_s, c=c)
        z = W.lorentz_wrap(mu, v, c=c)
        sample_gap = (z[:, 1:] - (mu_s + v)).abs().max().item()
        density_gap = (
            (W.lorentz_log_prob(z, mu, sigma, c=c) - _gauss(z[:, 1:], mu_s, sigma))
            .abs()
            .max()
            .item()
        )
        per_c.append((sample_gap / c, density_gap / c))
    for k in range(2):
        ratios = [g[k] for g in per_c]
        assert max(ratios) / min(ratios) < 1.05, per_c


# ----------------------------------------------------------------------------
# mixtures (HVSA's prior, our reading) and KL
# ----------------------------------------------------------------------------
def _mixture_setup(gen, k=3, n=2, c=1.0):
    loc = P.expmap0(0.6 * torch.randn(k, n, dtype=F64, generator=gen), c=c)
    scale = 0.2 + torch.rand(k, n, dtype=F64, generator=gen)
    return loc, scale


def test_mixture_matches_direct_sum_and_single_component(gen):
    c = 1.0
    loc, scale = _mixture_setup(gen)
    z = P.expmap0(0.5 * torch.randn(40, 2, dtype=F64, generator=gen), c=c)
    w = t64(0.2, 0.5, 0.3)
    comps = torch.stack([W.poincare_log_prob(z, loc[i], scale[i], c=c) for i in range(3)], -1)
    direct = (comps.exp() * w).sum(-1).log()
    torch.testing.assert_close(W.mixture_log_prob(z, loc, scale, c=c, weights=w), direct)
    torch.testing.assert_close(W.mixture_log_prob(z, loc[:1], scale[:1], c=c), comps[:, 0])
    # HVSA Eq. (4): a label vector y gives (1/Σy) Σ_{y_l = 1} N_p(z | μ_l, Σ_l)
    y = t64(1.0, 0.0, 1.0)
    eq4 = ((comps[:, 0].exp() + comps[:, 2].exp()) / 2).log()
    torch.testing.assert_close(W.mixture_log_prob(z, loc, scale, c=c, weights=y), eq4)


def test_mixture_integrates_to_one_and_lorentz_agrees(gen):
    c = 0.5
    loc, scale = _mixture_setup(gen, c=c)
    w = t64(1.0, 2.0, 0.5)
    smax = P.radius(loc, c=c).max().item() / 12 + scale.max().item()  # covers every component
    total = disk_integral(
        lambda z: W.mixture_log_prob(z, loc, scale, c=c, weights=w).exp(),
        torch.zeros(2, dtype=F64),
        c,
        smax,
        nr=160,
    )
    assert total == pytest.approx(1.0, abs=1e-7)
    z = P.expmap0(0.7 * torch.randn(30, 2, dtype=F64, generator=gen), c=c)
    zl, locl = L.from_poincare(z, c=c), L.from_poincare(loc, c=c)
    lor = W.mixture_log_prob(zl, locl, scale, c=c, weights=w, model="lorentz")
    torch.testing.assert_close(lor, W.mixture_log_prob(z, loc, scale, c=c, weights=w))


def test_mixture_zero_weight_keeps_gradients_finite(gen):
    loc, scale = _mixture_setup(gen)
    loc.requires_grad_(True)
    w = t64(1.0, 0.0, 1.0).requires_grad_(True)
    z = P.expmap0(0.5 * torch.randn(8, 2, dtype=F64, generator=gen), c=1.0)
    W.mixture_log_prob(z, loc, scale, c=1.0, weights=w).sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(w.grad).all()
    assert (loc.grad[1] == 0).all()  # a dropped component gets no gradient


def test_same_mean_kl_is_the_tangent_gaussian_kl(gen):
    """Same μ: the Jacobian terms cancel, so log q - log p is the tangent Gaussians' log-ratio
    pointwise, and the Monte Carlo KL estimate E_q[log q - log p] converges to the closed form."""
    c, mu = 1.0, t64(0.3, 0.6)
    sq, sp = t64(0.4, 0.7), t64(0.9, 0.5)
    q, p = W.PoincareWrappedNormal(mu, sq, c=c), W.PoincareWrappedNormal(mu, sp, c=c)
    z = q.rsample((N_SAMPLES,), generator=torch.Generator().manual_seed(6))
    diff = q.log_prob(z) - p.log_prob(z)
    v = q.unwrap(z)
    torch.testing.assert_close(diff, _gauss(v, 0.0, sq) - _gauss(v, 0.0, sp), rtol=1e-9, atol=1e-9)
    kl = (sp / sq).log().sum() + ((sq**2) / (2 * sp**2)).sum() - len(sq) / 2
    se = diff.std().item() / math.sqrt(N_SAMPLES)
    assert abs(diff.mean().item() - kl.item()) <= 5 * se


# ----------------------------------------------------------------------------
# KL(q || mixture): HVSA's GM-VAE term (Eqs. 4 and 7)
# ----------------------------------------------------------------------------
def _kl_quadrature(loc, scale, mix_loc, mix_scale, c, weights=None, nr=120, nt=256):
    """KL(q || p) = ∫ q log(q/p) dvol over the disk (2-D), as a differentiable tensor."""
    rmax = P.radius(loc.detach(), c=c).item() + 12 * torch.as_tensor(scale).detach().max().item()
    x, w = np.polynomial.legendre.leggauss(nr)
    R, w = torch.tensor((x + 1) / 2 * rmax), torch.tensor(w * rmax / 2)
    th = torch.arange(nt, dtype=F64) * 2 * math.pi / nt
    rho = torch.tanh(math.sqrt(c) * R / 2) / math.sqrt(c)
    z = torch.stack([rho[:, None] * th.cos(), rho[:, None] * th.sin()], -1)
    log_q = W.poincare_log_prob(z, loc, scale, c=c)
    log_p = W.mixture_log_prob(z, mix_loc, mix_scale, c=c, weights=weights)
    f = log_q.exp() * (log_q - log_p) * (torch.sinh(math.sqrt(c) * R) / math.sqrt(c))[:, None]
    return ((f.mean(1) * 2 * math.pi) * w).sum()


def _kl_setup():
    c = 0.8
    mu, sigma = t64(0.25, -0.3), t64(0.35, 0.5)
    mix_loc = t64(0.4, 0.2, -0.3, 0.5, 0.1, -0.6).reshape(3, 2)
    mix_scale = t64(0.5, 0.3, 0.6, 0.4, 0.45, 0.45).reshape(3, 2)
    return c, mu, sigma, mix_loc, mix_scale


def test_kl_to_mixture_is_zero_when_every_component_is_q(gen):
    """log q - log p = 0 at every sample when the mixture is q itself (one or repeated
    component)."""
    c, mu, sigma, mix_loc, mix_scale = _kl_setup()
    for m in (1, 3):
        est = W.kl_to_mixture(
            mu, sigma, mu.expand(m, 2), sigma.expand(m, 2), c=c, k=50, generator=gen
        )
        assert est.abs().item() < 1e-12
    # selected components equal to q, a different one masked out: still 0
    comps = torch.stack([mu, mix_loc[1], mu])
    scales = torch.stack([sigma, mix_scale[1], sigma])
    est = W.kl_to_mixture(
        mu, sigma, comps, scales, c=c, mask=torch.tensor([True, False, True]), k=20, generator=gen
    )
    assert est.abs().item() < 1e-12


def test_kl_to_mixture_with_q_s_mean_is_the_tangent_gaussian_kl():
    """Components that all share μ and σ_p: p = N_W(μ, σ_p), KL = the tangent Gaussians' KL."""
    c, mu, sigma, _, _ = _kl_setup()
    sp = t64(0.6, 0.3)
    n_post = 20_000
    est = W.kl_to_mixture(
        mu.expand(n_post, 2), sigma, mu.expand(4, 2), sp.expand(4, 2), c=c, k=1,
        generator=torch.Generator().manual_seed(11),
    )
    exact = ((sp / sigma).log() + sigma**2 / (2 * sp**2) - 0.5).sum().item()
    se = est.std().item() / math.sqrt(n_post)
    assert abs(est.mean().item() - exact) <= 5 * se


def test_kl_to_mixture_agrees_with_quadrature_in_two_dimensions():
    """Unbiased: the mean of many single-sample estimates matches ∫ q log(q/p) dvol."""
    c, mu, sigma, mix_loc, mix_scale = _kl_setup()
    y = t64(1.0, 0.0, 1.0)
    ref = _kl_quadrature(mu, sigma, mix_loc, mix_scale, c, weights=y).item()
    n_post = 20_000
    est = W.kl_to_mixture(
        mu.expand(n_post, 2), sigma, mix_loc, mix_scale, c=c, mask=y, k=1,
        generator=torch.Generator().manual_seed(12),
    )
    se = est.std().item() / math.sqrt(n_post)
    assert ref > 0.3  # a genuinely different prior, not a near-zero KL
    assert abs(est.mean().item() - ref) <= 5 * se, (est.mean().item(), ref, se)
    # k samples per posterior: same mean, variance / k
    est4 = W.kl_to_mixture(
        mu.expand(n_post // 4, 2), sigma, mix_loc, mix_scale, c=c, mask=y, k=4,
        generator=torch.Generator().manual_seed(13),
    )
    se4 = est4.std().item() / math.sqrt(n_post // 4)
    assert abs(est4.mean().item() - ref) <= 5 * se4
    # Var(k = 4) = Var(k = 1) / 4, within 5 standard errors of the two variance estimates
    def var_and_se(e):
        v = e.var().item()
        return v, math.sqrt((((e - e.mean()) ** 4).mean().item() - v**2) / len(e))

    (v1, se1), (v4, se4v) = var_and_se(est), var_and_se(est4)
    assert abs(4 * v4 - v1) <= 5 * math.hypot(4 * se4v, se1)
    assert v4 < v1 / 2  # four samples: clearly less noise than one


def test_kl_to_mixture_gradient_is_unbiased_and_matches_finite_differences():
    c, mu, sigma, mix_loc, mix_scale = _kl_setup()
    y = t64(1.0, 1.0, 0.0)
    params = [t.clone().requires_grad_(True) for t in (mu, sigma, mix_loc, mix_scale)]
    _kl_quadrature(*params, c, weights=y).backward()
    ref = [p.grad.clone() for p in params]
    # the mean gradient of single-sample estimates, in 20 groups for a standard error
    groups = []
    for i in range(20):
        ps = [t.clone().requires_grad_(True) for t in (mu, sigma, mix_loc, mix_scale)]
        est = W.kl_to_mixture(
            ps[0].expand(1000, 2), ps[1], ps[2], ps[3], c=c, mask=y, k=1,
            generator=torch.Generator().manual_seed(100 + i),
        )
        est.mean().backward()
        groups.append(torch.cat([p.grad.flatten() for p in ps]))
    groups = torch.stack(groups)
    mean, se = groups.mean(0), groups.std(0) / math.sqrt(len(groups))
    want = torch.cat([g.flatten() for g in ref])
    assert (want[:4].abs() > 0.05).all()  # q's gradients are far from 0
    assert ((mean - want).abs() <= 5 * se + 1e-9).all(), (mean, want, se)
    assert (mean.reshape(-1)[[8, 9, 14, 15]] == 0).all()  # the unselected component: no gradient

    def f(loc, scale, m_loc, m_scale):
        return W.kl_to_mixture(
            loc, scale, m_loc, m_scale, c=c, mask=y, k=3,
            generator=torch.Generator().manual_seed(5),  # the same noise at every call
        )

    inputs = tuple(t.clone().requires_grad_(True) for t in (mu, sigma, mix_loc, mix_scale))
    assert torch.autograd.gradcheck(f, inputs)


def test_kl_to_mixture_mask_batches_and_lorentz(gen):
    """A masked component is a removed one; rows may have different numbers of positives;
    the Lorentz version gives the same estimate for the same noise."""
    c, _, sigma, mix_loc, mix_scale = _kl_setup()
    locs = t64(0.1, 0.2, -0.3, 0.1, 0.4, -0.4).reshape(3, 2)
    mask = torch.tensor([[True, False, True], [False, True, False], [True, True, True]])
    est = W.kl_to_mixture(
        locs, sigma, mix_loc, mix_scale, c=c, mask=mask, k=7,
        generator=torch.Generator().manual_seed(3),
    )
    assert est.shape == (3,)
    # a 0/1 float mask (HVSA's y) is the same mask
    est_f = W.kl_to_mixture(
        locs, sigma, mix_loc, mix_scale, c=c, mask=mask.to(F64), k=7,
        generator=torch.Generator().manual_seed(3),
    )
    torch.testing.assert_close(est_f, est)
    # with the same noise, each row is log q - log p over that row's positives only
    z = W.PoincareWrappedNormal(locs, sigma, c=c).rsample(
        (7,), generator=torch.Generator().manual_seed(3)
    )
    for b in range(3):
        kept = mask[b]
        log_q = W.poincare_log_prob(z[:, b], locs[b], sigma, c=c)
        log_p = W.mixture_log_prob(z[:, b], mix_loc[kept], mix_scale[kept], c=c)
        assert est[b].item() == pytest.approx((log_q - log_p).mean().item(), abs=1e-12)
    # one shared posterior, a batch of label sets: independent noise per row, as if expanded
    shared = W.kl_to_mixture(
        locs[0], sigma, mix_loc, mix_scale, c=c, mask=mask, k=7,
        generator=torch.Generator().manual_seed(3),
    )
    expanded = W.kl_to_mixture(
        locs[0].expand(3, 2), sigma, mix_loc, mix_scale, c=c, mask=mask, k=7,
        generator=torch.Generator().manual_seed(3),
    )
    assert shared.shape == (3,)
    torch.testing.assert_close(shared, expanded)
    # each posterior with its own components: (B, M, n)
    own = torch.stack([mix_loc, mix_loc.flip(0), -mix_loc])
    est_own = W.kl_to_mixture(locs, sigma, own, mix_scale, c=c, mask=mask, k=2, generator=gen)
    assert est_own.shape == (3,) and torch.isfinite(est_own).all()
    # Lorentz: the same noise gives the image points, so the same estimate
    lor = W.kl_to_mixture(
        L.from_poincare(locs, c=c), sigma, L.from_poincare(mix_loc, c=c), mix_scale, c=c,
        mask=mask, k=7, model="lorentz", generator=torch.Generator().manual_seed(3),
    )
    torch.testing.assert_close(lor, est)


def test_kl_to_mixture_bad_input():
    c, mu, sigma, mix_loc, mix_scale = _kl_setup()
    with pytest.raises(ValueError, match="mask selects no component.*empty prior"):
        W.kl_to_mixture(
            mu.expand(2, 2), sigma, mix_loc, mix_scale, c=c,
            mask=torch.tensor([[True, False, False], [False, False, False]]),
        )
    with pytest.raises(ValueError, match="mask must have last size M = 3"):
        W.kl_to_mixture(mu, sigma, mix_loc, mix_scale, c=c, mask=torch.tensor([True, False]))
    with pytest.raises(ValueError, match="mask must be boolean or hold only 0 and 1"):
        W.kl_to_mixture(mu, sigma, mix_loc, mix_scale, c=c, mask=t64(0.5, 1.0, 0.0))
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        W.kl_to_mixture(mu, sigma, mix_loc, mix_scale, c=c, k=0)
    with pytest.raises(ValueError, match="mix_loc must have shape"):
        W.kl_to_mixture(mu, sigma, mix_loc[0], mix_scale, c=c)
    with pytest.raises(ValueError, match="model must be"):
        W.kl_to_mixture(mu, sigma, mix_loc, mix_scale, c=c, model="klein")
    with pytest.raises(ValueError, match="mix_loc must have shape"):
        W.kl_to_mixture(mu, sigma, torch.zeros(3, 3, dtype=F64), mix_scale, c=c)
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        W.kl_to_mixture(mu, sigma, mix_loc, mix_scale * 0, c=c)
    with pytest.raises(ValueError, match="batch shapes .* must broadcast"):
        W.kl_to_mixture(
            mu.expand(4, 2), sigma, mix_loc, mix_scale, c=c, mask=torch.ones(3, 3, dtype=bool)
        )
    with pytest.raises(ValueError, match="loc must lie inside the Poincare ball"):
        W.kl_to_mixture(mu, sigma, mix_loc * 3, mix_scale, c=c)
    with pytest.raises(ValueError, match="c must be finite and > 0"):
        W.kl_to_mixture(mu, sigma, mix_loc, mix_scale, c=-1.0)


# ----------------------------------------------------------------------------
# gradients, precision, edge cases
# ----------------------------------------------------------------------------
def test_rsample_gradients_reach_loc_scale_and_curvature(gen):
    from hyro_edu.geometry.lorentz import LearnableCurvature

    k = LearnableCurvature(0.8)
    loc = t64(0.2, -0.3).requires_grad_(True)
    scale = t64(0.5, 0.4).requires_grad_(True)
    d = W.PoincareWrappedNormal(loc, scale, c=k().double())
    z = d.rsample((16,), generator=gen)
    (z.sum() + d.log_prob(z).sum()).backward()
    for g in (loc.grad, scale.grad, k.log_c.grad):
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    loc_l = L.lift(t64(0.4, 0.1), c=0.8).detach().requires_grad_(True)
    scale_l = t64(0.3).requires_grad_(True)
    dl = W.LorentzWrappedNormal(loc_l, scale_l, c=0.8)
    zl = dl.rsample((16,), generator=gen)
    (zl.sum() + dl.log_prob(zl).sum()).backward()
    assert torch.isfinite(loc_l.grad).all() and torch.isfinite(scale_l.grad).all()
    assert scale_l.grad.abs().item() > 0


def test_log_prob_gradient_matches_finite_differences(gen):
    mu, sigma, c = t64(0.3, -0.1, 0.2), t64(0.5, 0.8, 0.3), 1.3

    def f(loc, s, z):
        return W.poincare_log_prob(z, loc, s, c=c)

    z = W.poincare_wrap(mu, torch.randn(4, 3, dtype=F64, generator=gen) * sigma, c=c)
    inputs = (
        mu.clone().requires_grad_(True),
        sigma.clone().requires_grad_(True),
        z.clone().requires_grad_(True),
    )
    assert torch.autograd.gradcheck(f, inputs)


def test_log_prob_at_the_mean_is_finite_with_finite_gradient():
    mu = t64(0.4, 0.2).requires_grad_(True)
    z = t64(0.4, 0.2).requires_grad_(True)
    lp = W.poincare_log_prob(z, mu, 0.5, c=1.0)
    lp.backward()
    # r = 0: log p = log N(0; 0, σ²) exactly
    assert lp.item() == pytest.approx(
        2 * (-math.log(0.5) - 0.5 * math.log(2 * math.pi)), abs=1e-12
    )
    assert torch.isfinite(mu.grad).all() and torch.isfinite(z.grad).all()


@given(
    c=st.floats(1e-3, 1e3),
    frac=st.sampled_from([0.0, 0.5, 0.9, 0.999]),
    sigma=st.sampled_from([1e-6, 1e-2, 1.0, 10.0]),
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_no_nan_or_inf_forward_or_backward(c, frac, sigma, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(3, dtype=dtype, generator=g)
    mu = (direction / direction.norm() * frac / c**0.5).requires_grad_(True)
    scale = torch.full((3,), sigma, dtype=dtype, requires_grad=True)
    d = W.PoincareWrappedNormal(mu, scale, c=c)
    z = d.rsample((5,), generator=g)
    lp = d.log_prob(z) + d.log_prob(mu.detach().unsqueeze(0))
    assert torch.isfinite(z).all() and torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(mu.grad).all() and torch.isfinite(scale.grad).all()
    mu_l = L.from_poincare(mu.detach(), c=c).requires_grad_(True)
    dl = W.LorentzWrappedNormal(mu_l, scale.detach(), c=c)
    zl = dl.rsample((5,), generator=g)
    lpl = dl.log_prob(zl)
    assert torch.isfinite(zl).all() and torch.isfinite(lpl).all()
    lpl.sum().backward()
    assert torch.isfinite(mu_l.grad).all()


def test_half_precision_and_autocast_compute_in_float32():
    mu = torch.tensor([0.3, -0.2], dtype=torch.float16)
    z = torch.tensor([0.1, 0.4], dtype=torch.float16)
    lp = W.poincare_log_prob(z, mu, torch.tensor(0.5, dtype=torch.float16), c=1.0)
    assert lp.dtype == torch.float32
    reference = W.poincare_log_prob(z.float(), mu.float(), 0.5, c=1.0)
    assert lp.item() == reference.item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = W.PoincareWrappedNormal(mu.float(), 0.5, c=1.0).rsample(
            (4,), generator=torch.Generator().manual_seed(0)
        )
    assert s.dtype == torch.float32


def test_shapes_and_broadcasting(gen):
    loc = P.expmap0(0.3 * torch.randn(4, 1, 5, dtype=F64, generator=gen), c=1.0)
    scale = 0.5 + torch.rand(3, 5, dtype=F64, generator=gen)
    d = W.PoincareWrappedNormal(loc, scale, c=1.0)
    assert d.batch_shape == (4, 3) and d.event_shape == (5,)
    z = d.rsample((2,), generator=gen)
    assert z.shape == (2, 4, 3, 5) and d.log_prob(z).shape == (2, 4, 3)
    dl = W.LorentzWrappedNormal(L.from_poincare(loc, c=1.0), scale, c=1.0)
    assert dl.rsample((2,), generator=gen).shape == (2, 4, 3, 6)


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------
def test_bad_input():
    mu = t64(0.1, 0.2)
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        W.PoincareWrappedNormal(mu, 0.0, c=1.0)
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        W.PoincareWrappedNormal(mu, t64(0.5, -1.0), c=1.0)
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        W.poincare_log_prob(mu, mu, t64(float("nan"), 1.0), c=1.0)
    with pytest.raises(ValueError, match="c must be finite and > 0"):
        W.PoincareWrappedNormal(mu, 0.5, c=0.0)
    with pytest.raises(ValueError, match="c must be finite and > 0"):
        W.LorentzWrappedNormal(L.lift(mu, c=1.0), 0.5, c=-1.0)
    with pytest.raises(ValueError, match="scale must have last size n = 2"):
        W.PoincareWrappedNormal(mu, t64(0.5, 0.5, 0.5), c=1.0)
    with pytest.raises(ValueError, match="must broadcast"):
        W.PoincareWrappedNormal(torch.zeros(3, 2, dtype=F64), torch.ones(4, 2, dtype=F64), c=1.0)
    with pytest.raises(ValueError, match="loc must lie inside the Poincare ball"):
        W.PoincareWrappedNormal(t64(0.9, 0.9), 0.5, c=1.0)
    with pytest.raises(ValueError, match="z must lie inside the Poincare ball"):
        W.PoincareWrappedNormal(mu, 0.5, c=1.0).log_prob(t64(2.0, 0.0))
    with pytest.raises(ValueError, match="same size along dim"):
        W.PoincareWrappedNormal(mu, 0.5, c=1.0).log_prob(t64(0.1, 0.0, 0.0))
    with pytest.raises(ValueError, match="loc must lie on the hyperboloid"):
        W.LorentzWrappedNormal(t64(0.5, 0.1, 0.2), 0.5, c=1.0)
    with pytest.raises(ValueError, match="z must lie on the hyperboloid"):
        W.LorentzWrappedNormal(L.lift(mu, c=1.0), 0.5, c=1.0).log_prob(t64(1.0, 0.3, 0.3))
    with pytest.raises(ValueError, match="scale must have last size n = 2"):
        W.LorentzWrappedNormal(L.lift(mu, c=1.0), t64(0.5, 0.5, 0.5), c=1.0)
    with pytest.raises(ValueError, match="convention must be one of"):
        W.poincare_log_prob(mu, mu, 0.5, c=1.0, convention="hvsa")
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        W.mixture_log_prob(mu, torch.stack([mu, -mu]), 0.5, c=1.0, weights=t64(1.0, -1.0))
    with pytest.raises(ValueError, match="weights must have last size K = 2"):
        W.mixture_log_prob(mu, torch.stack([mu, -mu]), 0.5, c=1.0, weights=t64(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="model must be"):
        W.mixture_log_prob(mu, torch.stack([mu, -mu]), 0.5, c=1.0, model="klein")
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        W.log_det_expmap(t64(1.0), c=1.0, n=0)
    with pytest.raises(ValueError, match="scale must be a number > 0 or a floating-point tensor"):
        W.PoincareWrappedNormal(mu, "wide", c=1.0)
