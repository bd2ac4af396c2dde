"""The comparisons behind the exercise checks: a wrong answer raises `Wrong` with a hint.

Every message says what is wrong (a shape, a position, a direction, a missing key) and never
what the right answer is, so a check can be run as often as a student likes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

KINDS = ("code", "numeric", "measure", "conceptual")


class Wrong(Exception):
    """A wrong answer; the message is the hint shown to the student."""


@dataclass(frozen=True)
class Exercise:
    """One exercise of the book.

    Args:
        kind: "code" (a function, run against the package's on random inputs), "numeric" (a
            number or a few, within a tolerance), "measure" (a changed model or scan and the
            measured effect, checked for structure and sign) or "conceptual" (no automatic check).
        title: a few words, for listings.
        checker: raises Wrong for a wrong answer; None for conceptual exercises.
        hint: shown with every wrong answer: where to look, never the solution.
    """

    kind: str
    title: str
    checker: Callable[[object], None] | None = None
    hint: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")
        if (self.checker is None) != (self.kind == "conceptual"):
            need = "needs a" if self.checker is None else "has no"
            raise ValueError(f"checker: a {self.kind} exercise {need} checker")


def _describe(args: Sequence) -> str:
    """Shapes of the tensors (also inside lists) and values of the rest: '(2, 16), [(3,)], 4'."""
    def one(a) -> str:
        if isinstance(a, torch.Tensor):
            return str(tuple(a.shape))
        if isinstance(a, list | tuple) and a and all(isinstance(x, torch.Tensor) for x in a):
            return "[" + ", ".join(one(x) for x in a) + "]"
        return repr(a)
    return ", ".join(one(a) for a in args)


def _copy(a):
    """A copy of a tensor (or of a list of tensors), so that the student's code cannot alter it."""
    if isinstance(a, torch.Tensor):
        return a.clone()
    return [_copy(x) for x in a] if isinstance(a, list) else a


def _compare_tensors(got, expected, rtol: float, atol: float, where: str) -> None:
    """Raise Wrong unless `got` is a tensor like `expected` (shape, infinities, values).

    A plain number is accepted where `expected` is a 0-d tensor.
    """
    if expected.ndim == 0 and not isinstance(got, torch.Tensor):
        got = torch.tensor(as_number(got, f"{where}: your output"), dtype=expected.dtype)
    if not isinstance(got, torch.Tensor):
        raise Wrong(f"{where}: your function returned {type(got).__name__}, expected a tensor")
    if got.shape != expected.shape:
        raise Wrong(f"{where}: your output has shape {tuple(got.shape)}, expected "
                    f"{tuple(expected.shape)}")
    if got.is_complex() != expected.is_complex():
        raise Wrong(f"{where}: your output is {'' if got.is_complex() else 'not '}complex, "
                    f"expected a {expected.dtype} tensor")
    got, expected = got.detach().to(expected.dtype), expected.detach()
    if (got.isinf() != expected.isinf()).any() or (got.isnan() != expected.isnan()).any():
        bad = ((got.isinf() != expected.isinf()) | (got.isnan() != expected.isnan())).nonzero()
        raise Wrong(f"{where}: infinities or NaNs in the wrong places, first at index "
                    f"{tuple(bad[0].tolist())}")
    if (got[expected.isinf()] != expected[expected.isinf()]).any():
        raise Wrong(f"{where}: an infinity has the wrong sign")
    finite = expected.isfinite()
    diff = (got - expected).abs().masked_fill(~finite, 0)
    bound = atol + rtol * expected.abs().masked_fill(~finite, 0)
    if (diff > bound).any():
        index = tuple(int(i) for i in torch.unravel_index((diff - bound).argmax(), diff.shape))
        raise Wrong(f"{where}: max |difference| {diff.max().item():.2e} is above the tolerance "
                    f"(rtol {rtol:g}, atol {atol:g}); the worst entry is at index {index}")


def compare_functions(student: Callable, reference: Callable, cases: Sequence[tuple],
                      rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Run `student(*args)` and `reference(*args)` on every case; raise Wrong at the first mismatch.

    Outputs may be a tensor or a tuple of tensors (compared entry by entry). Exceptions raised by
    the student's function are reported as the hint, with the input shapes.
    """
    if not callable(student):
        raise Wrong(f"the answer must be a function, got {type(student).__name__}")
    for args in cases:
        where = f"inputs {_describe(args)}"
        expected = reference(*args)
        try:
            got = student(*(_copy(a) for a in args))
        except NotImplementedError:
            raise
        except Exception as err:  # the student's code: report, never crash the check
            raise Wrong(f"{where}: your function raised {type(err).__name__}: {err}") from None
        if isinstance(expected, tuple):
            if not isinstance(got, tuple) or len(got) != len(expected):
                raise Wrong(f"{where}: expected a tuple of {len(expected)} outputs")
            for i, (g, e) in enumerate(zip(got, expected, strict=True)):
                _compare_tensors(g, e, rtol, atol, f"{where}, output {i}")
        else:
            _compare_tensors(got, expected, rtol, atol, where)


def compare_number(answer, expected: float, tol: float, what: str = "your number") -> None:
    """Raise Wrong unless `answer` is a real number within `tol` of `expected` (absolute)."""
    value = as_number(answer, what)
    if not abs(value - expected) <= tol:
        raise Wrong(f"{what} is too {'large' if value > expected else 'small'} (tolerance {tol:g})")


def as_number(answer, what: str = "your answer") -> float:
    """A finite float from an int, float, 0-d tensor or NumPy scalar, or Wrong."""
    if isinstance(answer, torch.Tensor):
        if answer.numel() != 1:
            raise Wrong(f"{what} must be one number, got a tensor of shape {tuple(answer.shape)}")
        answer = answer.item()
    try:
        value = float(answer)
    except (TypeError, ValueError):
        raise Wrong(f"{what} must be a number, got {type(answer).__name__}") from None
    if isinstance(answer, bool) or not math.isfinite(value):
        raise Wrong(f"{what} must be a finite number, got {answer!r}")
    return value


def require_keys(answer, keys: Sequence, what: str = "your answer") -> dict:
    """`answer` as a dict holding at least `keys`, each a finite number; or Wrong naming the gap."""
    if not isinstance(answer, dict):
        raise Wrong(f"{what} must be a dict with keys {list(keys)}, got {type(answer).__name__}")
    missing = [k for k in keys if k not in answer]
    if missing:
        raise Wrong(f"{what} lacks the keys {missing} (it has {list(answer)})")
    return {k: as_number(answer[k], f"{what}[{k!r}]") for k in keys}


def zero_and_nonzero(answer, zero: tuple[str, float, str], nonzero: tuple[str, float, str]) -> None:
    """A measured pair of differences: answer[zero key] must be at most its bound (nothing
    changed), answer[nonzero key] at least its bound (something did); each tuple is
    (key, bound, message when violated)."""
    got = require_keys(answer, (zero[0], nonzero[0]))
    if got[zero[0]] > zero[1]:
        raise Wrong(zero[2])
    if got[nonzero[0]] < nonzero[1]:
        raise Wrong(nonzero[2])


def random_cases(make: Callable[[torch.Generator, tuple], tuple], shapes: Sequence[tuple],
                 seed: int = 0) -> list[tuple]:
    """Seeded inputs: `make(generator, shape)` for every shape, one generator for all."""
    g = torch.Generator().manual_seed(seed)
    return [make(g, shape) for shape in shapes]
