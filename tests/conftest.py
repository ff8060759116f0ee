"""Shared fixtures and helpers for the unit tests."""
from __future__ import annotations

import os
import signal

import pytest
import torch
from hypothesis import HealthCheck, settings

# One intra-op thread for the unit tests: their tensors are small, and a two-thread pool stalls
# (100x slower measured) whenever another process holds a core.  1 is also the safe value:
# torch.set_num_threads(k >= 2) breaks batched CPU LU in torch 2.14 (see hyro_edu.geometry.cayley.solve).
torch.set_num_threads(1)

# A test run started in the background of a non-interactive shell (`.ci/run &`, `nohup`) inherits
# SIGINT ignored, and the trainers rightly leave an ignored signal alone (hyro_edu.training.runs),
# so the interruption tests would test the launcher instead of the trainer.  They need Python's
# usual Ctrl-C behaviour, in this process and in the training processes it starts (an ignored
# signal stays ignored across exec; a Python handler becomes the default again).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Hypothesis: enough examples to find edge cases, bounded for a 2-core CI.
settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

CURVATURES = [0.01, 0.5, 1.0, 2.0]
DTYPES = [torch.float32, torch.float64]

# Tolerances for comparisons of values computed two different ways.
TOL = {
    torch.float32: dict(rtol=2e-4, atol=2e-5),
    torch.float64: dict(rtol=1e-9, atol=1e-11),
}


def ball_points(n: int, dim: int, c: float, dtype, *, max_frac: float = 0.9, generator=None) -> torch.Tensor:
    """``n`` points of the ball of curvature ``-c``: random directions, ``sqrt(c)‖x‖`` uniform in [0, max_frac]."""
    x = torch.randn(n, dim, dtype=dtype, generator=generator)
    x = x / x.norm(dim=-1, keepdim=True)
    return x * torch.rand(n, 1, dtype=dtype, generator=generator) * max_frac / c**0.5


@pytest.fixture(params=CURVATURES, ids=lambda c: f"c={c}")
def c(request):
    return request.param


@pytest.fixture(params=DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def dtype(request):
    return request.param


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
