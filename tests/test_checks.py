"""The exercise checks: each accepts a right answer and rejects a wrong one, never leaking it."""

import math
import re
from pathlib import Path

import nbformat
import pytest
import torch

from mambaadv2_ref.checks import EXERCISES, STRICT_ENV, check, verdict
from mambaadv2_ref.config import preset
from mambaadv2_ref.metrics.summary import ALL_KEYS
from mambaadv2_ref.model import build_model
from mambaadv2_ref.scanning import ScanPlan, StagePlan, curve_order, get_plan, locality_stats
from mambaadv2_ref.scans import segsum
from mambaadv2_ref.scans.lti import ssm_kernel

BOOK = Path(__file__).resolve().parents[1] / "book"
FENCE = re.compile(r"```python\n(.*?)```", re.S)


def _trainable(profile="tiny", **overrides):
    torch.manual_seed(0)
    net = build_model("mambaadv2", profile, pretrained=False, **overrides)
    return sum(p.numel() for p in net.trainable_parameters())


def _profile_counts():
    return {"tiny": _trainable("tiny"), "small": _trainable("small")}


def _forgetting():
    """Sum |M[40, :16]| of chapter 3's channel, built from the segment sums."""
    A = torch.tensor([-1.0, -0.3], dtype=torch.float64)
    out = {}
    for name, jump in (("lti", False), ("selective", True)):
        delta = torch.full((48,), 0.05, dtype=torch.float64)
        if jump:
            delta[[16, 32]] = 3.0
        M = torch.exp(segsum(A[:, None] * delta[None])).sum(0) * delta[None, :]
        out[name] = M[40, :16].abs().sum().item()
    return out


def _dss_counts():
    from mambaadv2_ref.blocks.dss import DSSModule
    return {name: sum(p.numel() for p in DSSModule(32, 2, StagePlan("hilbert", 2), preset(
        "tiny", d_state=8, headdim=8, use_fft=flag)).parameters())
            for name, flag in (("with_fft", True), ("without_fft", False))}


def _path_counts():
    return {mode: _trainable(path_mode=mode) for mode in ("sum", "recurrence", "gate")}


def _hilbert_gap():
    return locality_stats(curve_order("hilbert", 16, 16), 16, 16)["neighbour_distance_geo"]


def _halving():
    return ScanPlan(tuple(StagePlan("hilbert", k) for k in (8, 4, 2, 1)), name="halving")


def _unstable_segsum(a):
    c = a.cumsum(-1)
    S = c[..., :, None] - c[..., None, :]
    return S.masked_fill(~torch.ones(S.shape[-2:], dtype=torch.bool).tril(), float("-inf"))


def _unstable_ap(scores, labels):
    hits = labels[torch.argsort(scores, descending=True)].double()
    return ((hits.cumsum(0) / torch.arange(1, len(hits) + 1)) * hits).sum().item() / len(hits)


def _f1_strict(scores, labels):
    """F1max with 'score > t' instead of '>=': wrong at the best threshold."""
    best = (0.0, 0.0)
    for t in sorted(set(scores.tolist())):
        predicted = scores > t
        tp = (predicted & (labels == 1)).sum().item()
        f1 = 2 * tp / (predicted.sum().item() + (labels == 1).sum().item())
        best = max(best, (f1, t))
    return best


def _all_decay(params, weight_decay):
    return [{"params": [p for p in params if p.requires_grad], "weight_decay": weight_decay}]


class Lazy:
    """An answer computed only when its test runs (it builds models)."""

    def __init__(self, make):
        self.make = make


# id -> (a right answer or None when only the book's solution is one, a wrong answer)
CASES = {
    "ch00.ex3": (0.01, 0.02),
    "ch00.ex4": (Lazy(_profile_counts), Lazy(lambda: {**_profile_counts(), "tiny": 1})),
    "ch00.ex5": (1200, 1199),
    "ch01.ex1": ({k: 0.0 for k in ALL_KEYS}, {**{k: 0.0 for k in ALL_KEYS}, "AUPRO": 0.01}),
    "ch01.ex2": ({"P-AUROC": 0.05, "AUPRO": 0.21}, {"P-AUROC": 0.21, "AUPRO": 0.05}),
    "ch01.ex3": (None, _unstable_ap),
    "ch02.ex2": (0.4, 0.2),
    "ch02.ex3": (ssm_kernel, lambda A_bar, B_bar, C, L: ssm_kernel(A_bar, B_bar, C, L + 1)[1:]),
    "ch02.ex4": ({0.0: 0.99, 0.5: 2.0, 1.0: 1.0}, {0.0: 2.0, 0.5: 1.0, 1.0: 1.0}),
    "ch03.ex2": (Lazy(_forgetting), Lazy(lambda: {**_forgetting(), "selective": 0.5})),
    "ch03.ex4": (111, 110),
    "ch03.ex5": (None, lambda u, delta, A, B, C: __import__("mambaadv2_ref.scans").scans
                 .selective_scan_sequential(u, delta, A, B[:, 0], C[:, 0])[0]),
    "ch04.ex1": ((1, 4), (1, 8)),
    "ch04.ex2": (segsum, _unstable_segsum),
    "ch04.ex3": ({"first": 0.5, "last": 0.0}, {"first": 0.5, "last": 0.3}),
    "ch05.ex1": ({"constant": 1e-14, "second_half": 0.3}, {"constant": 0.3, "second_half": 0.3}),
    "ch05.ex2": (None, lambda Angles, DT: torch.cumsum(DT.transpose(1, 2)[..., None] * math.pi
                                                       * Angles, dim=1)),
    "ch05.ex4": (2.0 ** -8, 2.0 ** -7),
    "ch06.ex2": (4.5, 8.0),
    "ch06.ex4": (None, lambda H, W: curve_order("snake", H, W)),
    "ch06.ex5": (Lazy(lambda: {"spiral": _hilbert_gap() + 1, "hilbert": _hilbert_gap()}),
                 Lazy(lambda: {"spiral": _hilbert_gap() - 0.5, "hilbert": _hilbert_gap()})),
    "ch07.ex1": ({"causal": 0.0, "two_sided": 0.5}, {"causal": 0.5, "two_sided": 0.5}),
    "ch07.ex3": (65 / 256, 66 / 256),
    "ch07.ex4": (None, lambda delta, A: torch.exp(segsum((delta * A).T)).nan_to_num(0)
                 .permute(1, 2, 0)),
    "ch08.ex2": (None, lambda x, grid: torch.fft.irfft2(torch.fft.rfft2(x, norm="ortho"),
                                                        norm="ortho")),
    "ch08.ex3": (12845056, 2 * 12845056),
    "ch08.ex4": (Lazy(_dss_counts), Lazy(lambda: {"with_fft": _dss_counts()["without_fft"],
                                                  "without_fft": _dss_counts()["with_fft"]})),
    "ch09.ex1": ({"plan": _halving(), "ratio": 7680 / 43520},
                 {"plan": get_plan("uniform"), "ratio": 1.0}),
    "ch09.ex2": ({"uniform": 8 * (64**2 + 256**2 + 1024**2 + 4096**2),
                  "decay_deep": 8 * 64**2 + 8 * 256**2 + 4 * 1024**2 + 2 * 4096**2},
                 {"uniform": 8 * (64 + 256 + 1024 + 4096), "decay_deep": 1}),
    "ch09.ex3": (3 * 4**3 / (4**4 - 1), 0.75),
    "ch09.ex4": (Lazy(lambda: preset("tiny", scan_plan={"stages": [
        {"curve": "hilbert", "num_directions": 4}] * 2 + [
        {"curve": "snake", "num_directions": 2}] * 2})), Lazy(lambda: preset("tiny"))),
    "ch10.ex3": (Lazy(_path_counts), Lazy(lambda: {**_path_counts(), "gate": 1})),
    "ch10.ex4": (None, lambda enc, dec, size: sum(torch.nn.functional.interpolate(
        (1 - torch.nn.functional.cosine_similarity(f, g, dim=1))[:, None], size=size,
        mode="bilinear", align_corners=False)[:, 0] for f, g in zip(enc, dec, strict=True))),
    "ch11.ex3": (None, _all_decay),
    "ch11.ex4": ({"default": 3.1, "changed": 3.2, "steps": 20},
                 {"default": 3.1, "changed": 3.1, "steps": 20}),
    "ch12.ex2": ({"max": 0.8, "mean": 0.6}, {"max": 1.3, "mean": 0.6}),
    "ch12.ex4": (None, _f1_strict),
    "ch13.ex1": (58880 / 157184, 0.5),
    "ch13.ex3": ({"default": 100, "no_checkpoint": 200}, {"default": 200, "no_checkpoint": 100}),
}


def _answer(value):
    return value.make() if isinstance(value, Lazy) else value


def _book_solutions() -> dict:
    """id -> (solution code, name passed to check) of every code exercise in the chapters."""
    found = {}
    for path in sorted(BOOK.glob("[0-9][0-9]_*.ipynb")):
        solution = None
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown" and "<summary>Solution</summary>" in cell.source:
                solution = "\n".join(FENCE.findall(cell.source))
            call = re.search(r'check\("(ch\d\d\.ex\d+)", (\w+)\)', cell.source)
            if cell.cell_type == "code" and call and EXERCISES[call[1]].kind == "code":
                found[call[1]] = (solution, call[2])
    return found


def test_every_checked_exercise_has_cases():
    checked = {k for k, e in EXERCISES.items() if e.checker is not None}
    assert checked == set(CASES)
    chapters = {k[:4] for k in EXERCISES}
    assert chapters == {f"ch{n:02d}" for n in range(14)}
    for chapter in chapters:
        kinds = [e.kind for k, e in EXERCISES.items() if k.startswith(chapter)]
        assert len(kinds) >= 3 and "measure" in kinds, chapter


@pytest.mark.parametrize("exercise_id", sorted(CASES))
def test_check_accepts_right_and_rejects_wrong(exercise_id):
    right, wrong = CASES[exercise_id]
    if right is not None:
        assert verdict(exercise_id, _answer(right)).ok, verdict(exercise_id, _answer(right))
    bad = verdict(exercise_id, _answer(wrong))
    assert not bad.ok and "not right yet" in bad.message and "Hint:" in bad.message


def test_book_solutions_of_code_exercises_pass():
    solutions = _book_solutions()
    assert set(solutions) == {k for k, e in EXERCISES.items() if e.kind == "code"}
    for exercise_id, (code, name) in solutions.items():
        if name == "answer":  # an object built in the chapter (ch09.ex4): covered by CASES
            continue
        namespace = {}
        exec(code, namespace)  # the instructor solution, as printed in the chapter
        assert verdict(exercise_id, namespace[name]).ok, verdict(exercise_id, namespace[name])


def test_missing_answers_and_student_errors_are_hints(capsys):
    def stub(*args):
        raise NotImplementedError

    def broken(*args):
        raise KeyError("oops")

    assert "not answered yet" in verdict("ch04.ex2", stub).message
    assert "not answered yet" in verdict("ch00.ex3", None).message
    assert "raised KeyError" in verdict("ch04.ex2", broken).message
    assert "not answered yet" in verdict("ch02.ex1").message
    assert not verdict("ch02.ex1", "   ").ok and not verdict("ch02.ex1", 3).ok
    recorded = verdict("ch02.ex1", "Euler's B is the first term of the series.")
    assert recorded.ok and "recorded (9 words)" in recorded.message
    check("ch00.ex3", 0.01)
    assert "right." in capsys.readouterr().out
    with pytest.raises(ValueError, match="exercise_id"):
        verdict("ch99.ex1", 1)


def test_messages_never_contain_the_expected_number():
    for value in (0.02, 100.0):
        message = verdict("ch00.ex3", value).message
        assert "0.01" not in message and "too" in message


def test_strict_mode_raises_for_wrong_and_missing_answers(monkeypatch, capsys):
    monkeypatch.setenv(STRICT_ENV, "1")
    with pytest.raises(AssertionError, match="ch00.ex3"):
        check("ch00.ex3", 0.5)
    with pytest.raises(AssertionError, match="not answered"):
        check("ch00.ex3", None)
    with pytest.raises(AssertionError, match="not answered"):
        check("ch02.ex1")                               # conceptual: only a missing answer
    check("ch00.ex3", 0.01)
    check("ch02.ex1", "a written answer")
    out = capsys.readouterr().out
    assert "right." in out and "answer recorded" in out
