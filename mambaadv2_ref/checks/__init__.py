"""Checks for the book's exercises: `check("ch04.ex2", answer)` says right or wrong, with a hint.

    harness     Wrong, Exercise and the comparisons (functions on random inputs, numbers, dicts)
    basics      chapters 0, 1 and 11-13: profiles, metrics, training, evaluation, costs
    ssm         chapters 2-5: LTI SSMs, the selective scan, SSD, Mamba-3
    decoder     chapters 6-10: scan curves, HSS, DSS, scan plans, the whole model

`EXERCISES` maps every exercise id ("chNN.exM") to its Exercise (kind, title, checker, hint).
Code exercises run the student's function against the package's own on seeded random inputs;
numeric ones compare within a stated tolerance; measurements are checked for structure and
sign; conceptual ones have no automatic check: their check only records that a written answer
is there (the model answer is in the instructor edition). No message ever contains the solution.
With MAMBAADV2_CHECKS_STRICT=1 a wrong or missing answer raises AssertionError, so that running a
student's notebook (nbval, jupyter execute) grades it.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from mambaadv2_ref.checks.basics import EXERCISES as _BASICS
from mambaadv2_ref.checks.decoder import EXERCISES as _DECODER
from mambaadv2_ref.checks.harness import Exercise, Wrong
from mambaadv2_ref.checks.ssm import EXERCISES as _SSM

STRICT_ENV = "MAMBAADV2_CHECKS_STRICT"

EXERCISES: dict[str, Exercise] = dict(sorted({**_BASICS, **_SSM, **_DECODER}.items()))


class Verdict(NamedTuple):
    """The outcome of one check: ok is True only for a right answer."""

    ok: bool
    message: str


def verdict(exercise_id: str, answer=None) -> Verdict:
    """Check `answer` for the exercise `exercise_id` without printing anything.

    A missing answer (None, or a function that raises NotImplementedError) is "not answered yet".
    A conceptual exercise is ok as soon as it has a written answer (a non-empty string): its
    content is for the instructor to read.
    """
    if exercise_id not in EXERCISES:
        raise ValueError(f"exercise_id must be one of the book's exercises, e.g. 'ch04.ex2'; got "
                         f"{exercise_id!r}")
    ex = EXERCISES[exercise_id]
    head = f"{exercise_id} ({ex.title})"
    if ex.checker is None:
        return _conceptual(head, answer)
    if answer is None:
        return Verdict(False, f"{head}: not answered yet. Hint: {ex.hint}")
    try:
        ex.checker(answer)
    except NotImplementedError:
        return Verdict(False, f"{head}: not answered yet (your function raises "
                              f"NotImplementedError). Hint: {ex.hint}")
    except Wrong as err:
        return Verdict(False, f"{head}: not right yet: {err}. Hint: {ex.hint}")
    return Verdict(True, f"{head}: right.")


def _conceptual(head: str, answer) -> Verdict:
    """A conceptual exercise: only whether a written answer is there (nothing to check)."""
    if not isinstance(answer, str) or not answer.strip():
        return Verdict(False, f"{head}: not answered yet: write your answer in words, as a "
                              'string: answer = """..."""')
    return Verdict(True, f"{head}: answer recorded ({len(answer.split())} words). There is no "
                         "automatic check for a conceptual exercise: your instructor reads it.")


def check(exercise_id: str, answer=None) -> None:
    """Print whether `answer` is right for `exercise_id`, with a hint when it is not.

    Raises AssertionError instead of printing a wrong or missing answer when
    $MAMBAADV2_CHECKS_STRICT is 1 (grading); for a conceptual exercise only a missing answer.
    """
    ok, message = verdict(exercise_id, answer)
    if not ok and os.environ.get(STRICT_ENV, "0") == "1":
        raise AssertionError(message)
    print(message)


__all__ = ["EXERCISES", "STRICT_ENV", "Exercise", "Verdict", "Wrong", "check", "verdict"]
