"""Chapter 2's LTI SSM basics: discretizations, recurrence == convolution == matrix form."""

import math

import pytest
import torch

from mambaadv2_ref.scans.lti import (
    RULES,
    continuous_impulse_response,
    discretize,
    impulse_response,
    kernel_matrix,
    ssm_convolve,
    ssm_kernel,
    ssm_recurrent,
)


def _system(complex_state: bool, N: int = 4):
    g = torch.Generator().manual_seed(0)
    A = -torch.rand(N, generator=g, dtype=torch.float64) - 0.1
    B = torch.randn(N, generator=g, dtype=torch.float64)
    C = torch.randn(N, generator=g, dtype=torch.float64)
    if complex_state:
        A = torch.complex(A, 3 * torch.randn(N, generator=g, dtype=torch.float64))
        B = torch.complex(B, torch.randn(N, generator=g, dtype=torch.float64))
        C = torch.complex(C, torch.randn(N, generator=g, dtype=torch.float64))
    return A, B, C


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("complex_state", [False, True])
def test_recurrence_equals_convolution_and_matrix(rule, complex_state):
    A, B, C = _system(complex_state)
    sys_ = discretize(rule, 0.1, A, B, trap=0.3)
    u = torch.randn(3, 50, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y_rec = ssm_recurrent(sys_.A_bar, sys_.B_bar, C, u, B_bar_prev=sys_.B_bar_prev)
    kernel = ssm_kernel(sys_.A_bar, sys_.B_bar, C, 50, B_bar_prev=sys_.B_bar_prev)
    torch.testing.assert_close(ssm_convolve(kernel, u), y_rec, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(u @ kernel_matrix(kernel).T, y_rec, rtol=1e-10, atol=1e-12)


def test_zoh_is_exact_for_a_step_input():
    # h' = a h + b with h(0) = 0 solves to h(t) = b/a (exp(a t) - 1): ZOH hits it at every sample.
    a, b, dt = -0.7, 1.3, 0.25
    sys_ = discretize("zoh", dt, [a], [b])
    y = ssm_recurrent(sys_.A_bar, sys_.B_bar, [1.0], torch.ones(20))
    t = dt * torch.arange(1, 21, dtype=torch.float64)
    torch.testing.assert_close(y, b / a * (torch.exp(a * t) - 1), rtol=1e-12, atol=1e-12)


def test_zoh_at_zero_A_is_an_integrator():
    sys_ = discretize("zoh", 0.5, [0.0], [2.0])
    assert sys_.A_bar.item() == 1.0 and sys_.B_bar.item() == 1.0


def test_error_orders_euler_first_trapezoid_second():
    # Against the exact (ZOH) kernel of a smooth input, halving dt halves Euler's error and
    # quarters the trapezoid's, as their orders 1 and 2 predict.
    def err(rule, dt):
        T = 4.0
        L = round(T / dt)
        t = dt * torch.arange(L, dtype=torch.float64)
        u = torch.sin(t)
        # exact solution of h' = -h + sin(t), h(0) = 0
        exact = 0.5 * (torch.sin(t) - torch.cos(t) + torch.exp(-t))
        sys_ = discretize(rule, dt, [-1.0], [1.0], trap=0.5)
        y = ssm_recurrent(sys_.A_bar, sys_.B_bar, [1.0], u, B_bar_prev=sys_.B_bar_prev)
        return (y - exact).abs().max().item()

    ratio_euler = err("euler", 0.02) / err("euler", 0.01)
    ratio_trap = err("exp_trapezoid", 0.02) / err("exp_trapezoid", 0.01)
    assert 1.7 < ratio_euler < 2.3
    assert 3.5 < ratio_trap < 4.5


def test_exp_trapezoid_with_trap_one_is_mamba1():
    A, B, _ = _system(False)
    one, mamba1 = discretize("exp_trapezoid", 0.2, A, B, trap=1.0), discretize("mamba1", 0.2, A, B)
    torch.testing.assert_close(one.A_bar, mamba1.A_bar)
    torch.testing.assert_close(one.B_bar, mamba1.B_bar)
    assert one.B_bar_prev.abs().max() == 0


def test_discrete_kernel_approximates_continuous_response():
    dt = 0.01
    A, B, C = _system(True)
    sys_ = discretize("zoh", dt, A, B)
    kernel = ssm_kernel(sys_.A_bar, sys_.B_bar, C, 200)
    t = dt * (torch.arange(200, dtype=torch.float64) + 0.5)
    torch.testing.assert_close(kernel / dt, continuous_impulse_response(A, B, C, t),
                               rtol=0, atol=2e-3)


def test_impulse_response_rotates_and_decays():
    k = impulse_response(0.1, -0.5, trap=1.0, angle=math.pi, length=41)
    # first step: trap * dt = 0.1; the phase turns by pi after 10 steps (dt * angle = pi / 10)
    assert k[0].item() == pytest.approx(0.1)
    assert k[10].item() == pytest.approx(-0.1 * math.exp(-0.5), rel=1e-12)
    assert k[20].item() == pytest.approx(0.1 * math.exp(-1.0), rel=1e-12)
    expected = ssm_recurrent(*discretize("exp_trapezoid", 0.1, [complex(-0.5, math.pi)], [1.0],
                                         trap=1.0)[:2], [1.0], torch.eye(41)[0])
    torch.testing.assert_close(k, expected)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: discretize("rk4", 0.1, [-1.0], [1.0]), "rule must be one of"),
        (lambda: discretize("zoh", 0.0, [-1.0], [1.0]), "dt must be a positive"),
        (lambda: discretize("zoh", 0.1, [-1.0, -2.0], [1.0]), "same shape"),
        (lambda: discretize("exp_trapezoid", 0.1, [-1.0], [1.0], trap=1.5), "trap must be"),
        (lambda: ssm_kernel([0.5], [1.0], [1.0], 0), "L must be a positive int"),
        (lambda: ssm_convolve(torch.ones(4), torch.ones(5)), "kernel must have shape"),
        (lambda: ssm_recurrent(torch.ones(2, 2), [1.0], [1.0], torch.ones(3)), "A_bar must be"),
        (lambda: impulse_response(0.1, float("nan")), "finite real"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
