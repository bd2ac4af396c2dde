"""Checks of chapters 2-5: LTI SSMs, the selective scan, SSD and Mamba-3."""

from __future__ import annotations

import torch

from mambaadv2_ref.checks.harness import (
    Exercise,
    Wrong,
    as_number,
    compare_functions,
    compare_number,
    random_cases,
    require_keys,
    zero_and_nonzero,
)
from mambaadv2_ref.scans import segsum, selective_scan_sequential
from mambaadv2_ref.scans.lti import ssm_kernel
from mambaadv2_ref.scans.mamba3 import rotary_phase


def _kernel_inputs(g: torch.Generator, shape: tuple) -> tuple:
    """A stable complex diagonal system of N states and a kernel length L."""
    N, L = shape
    radius = 0.5 + 0.45 * torch.rand(N, generator=g, dtype=torch.float64)
    angle = torch.randn(N, generator=g, dtype=torch.float64)
    A_bar = torch.polar(radius, angle)
    B_bar = torch.randn(N, generator=g, dtype=torch.complex128)
    C = torch.randn(N, generator=g, dtype=torch.complex128)
    return A_bar, B_bar, C, L


def check_kernel(answer) -> None:
    compare_functions(answer, ssm_kernel,
                      random_cases(_kernel_inputs, [(1, 1), (4, 16), (8, 100)]), 1e-9, 1e-10)


def check_trap_orders(answer) -> None:
    orders = require_keys(answer, (0.0, 0.5, 1.0), "your answer")
    for lam, value in orders.items():
        low, high = (1.8, 2.2) if lam == 0.5 else (0.8, 1.2)
        if not low <= value <= high:
            raise Wrong(f"the order for lambda = {lam} is outside what log2(error(dt) / "
                        "error(dt / 2)) gives with dt = 0.05 on the chapter's test signal")


def _selective_weights(delta: torch.Tensor) -> torch.Tensor:
    """M (L, L) of the chapter's two-state channel (A = -1, -0.3; B = C = 1) by one-hot inputs."""
    L = delta.shape[0]
    A = torch.tensor([[-1.0, -0.3]], dtype=torch.float64)
    ones = torch.ones(1, 2, L, dtype=torch.float64)
    eye = torch.eye(L, dtype=torch.float64)[:, None]                  # input s = one-hot e_s
    y, _ = selective_scan_sequential(eye, delta.expand(L, 1, L), A, ones.expand(L, 2, L),
                                     ones.expand(L, 2, L))
    return y[:, 0].T                                                  # row t, column s


def check_forgetting(answer) -> None:
    got = require_keys(answer, ("lti", "selective"), "your answer")
    delta = torch.full((48,), 0.05, dtype=torch.float64)
    expected = {"lti": _selective_weights(delta)[40, :16].abs().sum().item()}
    delta[[16, 32]] = 3.0
    expected["selective"] = _selective_weights(delta)[40, :16].abs().sum().item()
    for key, value in expected.items():
        compare_number(got[key], value, 1e-6 * max(1.0, value), f"your {key!r} weight")


def check_overflow_length(answer) -> None:
    value = as_number(answer, "your length")
    length = 1
    while torch.isfinite(torch.exp(torch.tensor(16 * 0.05 * length, dtype=torch.float32))):
        length += 1
    compare_number(value, length, 0, "your length")


def _grouped_inputs(g: torch.Generator, shape: tuple) -> tuple:
    b, D, G, N, L = shape
    u = torch.randn(b, D, L, generator=g, dtype=torch.float64)
    delta = torch.rand(b, D, L, generator=g, dtype=torch.float64) * 0.5
    A = -torch.rand(D, N, generator=g, dtype=torch.float64) - 0.1
    B = torch.randn(b, G, N, L, generator=g, dtype=torch.float64)
    C = torch.randn(b, G, N, L, generator=g, dtype=torch.float64)
    return u, delta, A, B, C


def check_grouped_scan(answer) -> None:
    compare_functions(answer, lambda *args: selective_scan_sequential(*args)[0],
                      random_cases(_grouped_inputs, [(2, 8, 2, 4, 10), (1, 6, 3, 2, 7),
                                                     (1, 4, 1, 3, 5)]), 1e-9, 1e-10)


def check_ranks(answer) -> None:
    if not isinstance(answer, tuple | list) or len(answer) != 2:
        raise Wrong("give a pair (rank of the mask block, rank of the masked-scores block)")
    if as_number(answer[0], "the first rank") != 1:
        raise Wrong("the rank of the mask block is not right: write L_ts as a product of a "
                    "function of t and a function of s")
    if as_number(answer[1], "the second rank") != 4:
        raise Wrong("the rank of the masked-scores block is not right: count the outer "
                    "products that the scores C_t . B_s add up")


def _segsum_inputs(g: torch.Generator, shape: tuple) -> tuple:
    if shape == (4096,):                              # the long, float32 case of the exercise
        return (torch.full(shape, -0.1),)
    return (-torch.rand(shape, generator=g, dtype=torch.float64),)


def check_segsum(answer) -> None:
    compare_functions(answer, lambda a: segsum(a.double()),
                      random_cases(_segsum_inputs, [(1,), (5,), (3, 7), (2, 2, 16), (4096,)]),
                      1e-5, 1e-5)


def check_two_sided_rows(answer) -> None:
    zero_and_nonzero(answer, ("last", 1e-9, "at the last position the two outputs should agree: "
                              "what is above the diagonal in the last row?"),
                     ("first", 1e-6, "at the first position the two outputs should differ: did "
                      "you set causal=False in one of them?"))


def check_phase_shift(answer) -> None:
    zero_and_nonzero(answer, ("constant", 1e-8, "adding the same constant to every phase should "
                              "change no output (to float64 rounding): did you add it to both q "
                              "and k?"),
                     ("second_half", 1e-6, "adding pi/3 to the second half only should change "
                      "the output: did you change the phases of the second half?"))


def _phase_inputs(g: torch.Generator, shape: tuple) -> tuple:
    b, L, h, n = shape
    Angles = torch.randn(b, L, h, n, generator=g, dtype=torch.float64)
    DT = torch.nn.functional.softplus(torch.randn(b, h, L, generator=g, dtype=torch.float64))
    return Angles, DT


def _rotation(phase) -> torch.Tensor:
    """(cos, sin) of a phase tensor: phases equal modulo 2 pi give the same rotation."""
    if not isinstance(phase, torch.Tensor):
        raise Wrong(f"your function returned {type(phase).__name__}, expected a tensor")
    return torch.stack([torch.cos(phase), torch.sin(phase)])


def check_rotary_phase(answer) -> None:
    if not callable(answer):
        raise Wrong(f"the answer must be a function, got {type(answer).__name__}")
    compare_functions(lambda A, D: _rotation(answer(A, D)), lambda A, D: _rotation(
        rotary_phase(A, D)), random_cases(_phase_inputs, [(1, 8, 1, 2), (2, 50, 3, 4)]),
        1e-9, 1e-9)


def check_bf16_rounding(answer) -> None:
    compare_number(answer, torch.finfo(torch.bfloat16).eps / 2, 2e-5,
                   "your relative rounding error")


EXERCISES = {
    "ch02.ex1": Exercise("conceptual", "ZOH against Euler for small steps"),
    "ch02.ex2": Exercise("numeric", "largest stable Euler step", lambda a: compare_number(
        a, 2 / 5, 1e-6, "your step"), "forward Euler gives A_bar = 1 + dt A; the recurrence is "
        "stable while |A_bar| < 1"),
    "ch02.ex3": Exercise("code", "the SSM kernel", check_kernel, "K_k = Re(sum_n C_n A_bar_n^k "
                         "B_bar_n) for k = 0 .. L-1, a real float64 tensor of length L"),
    "ch02.ex4": Exercise("measure", "accuracy order of the trapezoid factor", check_trap_orders,
                         "use the chapter's max_error with rule 'exp_trapezoid' and trap = 0, "
                         "0.5, 1; order = log2(error(0.05) / error(0.025))"),
    "ch02.ex5": Exercise("conceptual", "the trapezoid with lambda = 0"),
    "ch03.ex1": Exercise("conceptual", "the matrix when Delta goes to 0 or infinity"),
    "ch03.ex2": Exercise("measure", "how a large Delta forgets", check_forgetting,
                         "build M with the chapter's selective_matrix for both step sequences "
                         "and sum |M[40, s]| over s < 16"),
    "ch03.ex3": Exercise("conceptual", "the chunk size, from 1 to L"),
    "ch03.ex4": Exercise("numeric", "where the cumsum trick overflows", check_overflow_length,
                         "find the smallest L with exp(16 * 0.05 * L) = inf in float32 "
                         "(torch.finfo(torch.float32).max)"),
    "ch03.ex5": Exercise("code", "a grouped scan from ungrouped ones", check_grouped_scan,
                         "split the D channels into G equal consecutive blocks; block j reads "
                         "B[:, j] and C[:, j]; return y (b, D, L) only"),
    "ch04.ex1": Exercise("numeric", "ranks of the mask's off-diagonal blocks", check_ranks,
                         "torch.linalg.matrix_rank on mask[40:48, :8] and on "
                         "(mask * scores)[40:48, :8]"),
    "ch04.ex2": Exercise("code", "a stable segment sum", check_segsum,
                         "sum each segment a[s+1..t] on its own (a masked cumulative sum), "
                         "never the difference of two long cumulative sums; -inf above the "
                         "diagonal"),
    "ch04.ex3": Exercise("measure", "causal against two-sided, row by row", check_two_sided_rows,
                         "compare ssd_matrix(..., causal=False) with ssd_matrix(...) at rows 0 "
                         "and L-1: max |difference| over the channels"),
    "ch04.ex4": Exercise("conceptual", "starting from a given state"),
    "ch04.ex5": Exercise("conceptual", "is the two-sided mask semiseparable?"),
    "ch05.ex1": Exercise("measure", "a common phase offset", check_phase_shift,
                         "in a copy of mamba3_scratch add the offset to `phase` after the cumsum"),
    "ch05.ex2": Exercise("code", "the rotary phases", check_rotary_phase,
                         "Phi_t = sum over r <= t of DT_r * pi * tanh(Angles_r); mind the "
                         "layouts: Angles (b, L, h, n), DT (b, h, L)"),
    "ch05.ex3": Exercise("conceptual", "lambda = 0 and the diagonal"),
    "ch05.ex4": Exercise("numeric", "bfloat16 rounding", check_bf16_rounding,
                         "bfloat16 keeps 8 significant bits (torch.finfo(torch.bfloat16)); "
                         "round to nearest is off by at most half a unit in the last place"),
    "ch05.ex5": Exercise("conceptual", "the pairs that do not rotate"),
}
