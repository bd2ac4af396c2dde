"""Checks of chapters 0, 1 and 11-13: profiles, metrics, training, evaluation and costs.

The model is imported inside the checks that use it (it loads timm, which takes seconds; see
checks.decoder).
"""

from __future__ import annotations

import torch

from mambaadv2_ref.checks.harness import (
    Exercise,
    Wrong,
    compare_functions,
    compare_number,
    random_cases,
    require_keys,
)
from mambaadv2_ref.config import PROFILES, preset, stage_sizes
from mambaadv2_ref.metrics.curves import ap_from_counts, exact_counts, f1max_threshold
from mambaadv2_ref.metrics.summary import ALL_KEYS
from mambaadv2_ref.recipe import param_groups


def trainable_count(profile: str = "tiny", **overrides) -> int:
    """Trainable parameters of MambaADv2 at a profile (random encoder weights, seed 0)."""
    from mambaadv2_ref.model import build_model

    torch.manual_seed(0)
    model = build_model("mambaadv2", profile, pretrained=False, **overrides)
    return sum(p.numel() for p in model.trainable_parameters())


def check_profile_params(answer) -> None:
    got = require_keys(answer, ("tiny", "small"), "your answer")
    for profile, value in got.items():
        compare_number(value, trainable_count(profile), 0, f"your {profile!r} count")


def check_affine_invariance(answer) -> None:
    changes = require_keys(answer, ALL_KEYS, "your answer")
    moved = [k for k, v in changes.items() if abs(v) > 1e-9]
    if moved:
        raise Wrong(f"{moved} changed: did you transform the maps and recompute the scores from "
                    "them (scores = max of each map)?")


def check_missed_defect(answer) -> None:
    drops = require_keys(answer, ("P-AUROC", "AUPRO"), "your answer")
    if min(drops.values()) < 0:
        raise Wrong("a drop is the metric before minus the metric after; both should be >= 0")
    if drops["AUPRO"] <= drops["P-AUROC"]:
        raise Wrong("with the smallest defect missed, one of the two metrics should drop more "
                    "than the other: did you replace that image's map by noise only?")


def _score_inputs(g: torch.Generator, shape: tuple) -> tuple:
    (M,) = shape
    labels = torch.zeros(M, dtype=torch.long)
    labels[torch.randperm(M, generator=g)[: max(1, M // 3)]] = 1
    return torch.randn(M, generator=g, dtype=torch.float64), labels


def _tied_inputs(g: torch.Generator, shape: tuple) -> tuple:
    scores, labels = _score_inputs(g, shape)
    return (scores * 2).round() / 2, labels                     # many tied scores


def check_average_precision(answer) -> None:
    compare_functions(answer, lambda s, y: torch.tensor(ap_from_counts(*exact_counts(
        s.numpy(), y.numpy())), dtype=torch.float64),
        random_cases(_score_inputs, [(2,), (10,), (257,)]), 1e-9, 1e-12)


def _same_groups(student_groups, reference_groups) -> bool:
    """Same number of groups, weight decays and parameter sets (by identity), in any order."""
    def key(groups):
        return sorted((float(g["weight_decay"]), sorted(id(p) for p in g["params"]))
                      for g in groups)
    return key(student_groups) == key(reference_groups)


def check_param_groups(answer) -> None:
    if not callable(answer):
        raise Wrong(f"the answer must be a function, got {type(answer).__name__}")
    frozen = torch.nn.Linear(3, 3)
    frozen.requires_grad_(False)
    modules = [torch.nn.Linear(4, 2), torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.LayerNorm(8), frozen)]
    for module in modules:
        try:
            groups = answer(list(module.parameters()), 1e-4)
            ok = _same_groups(groups, param_groups(list(module.parameters()), 1e-4))
        except Exception as err:  # the student's code, or groups without the expected keys
            raise Wrong(f"on {module}: {type(err).__name__}: {err}") from None
        if not ok:
            raise Wrong(f"on {module.__class__.__name__}({len(list(module.parameters()))} "
                        "parameter tensors), your groups hold other parameters or weight decays")


def check_training_change(answer) -> None:
    got = require_keys(answer, ("default", "changed", "steps"), "your answer")
    if got["steps"] < 10:
        raise Wrong("train for at least 10 steps each")
    if min(got["default"], got["changed"]) <= 0:
        raise Wrong("a reconstruction loss is a sum of squares: it should be positive")
    if got["default"] == got["changed"]:
        raise Wrong("both runs ended at the same loss: did the change reach the second run "
                    "(model_overrides)?")


def check_mean_score(answer) -> None:
    got = require_keys(answer, ("max", "mean"), "your answer")
    if any(not 0 <= v <= 1 for v in got.values()):
        raise Wrong("an AUROC lies between 0 and 1")
    if got["max"] == got["mean"]:
        raise Wrong("the two AUROCs are identical: did you recompute the scores from the maps "
                    "with .mean instead of .amax?")


def check_f1_threshold(answer) -> None:
    compare_functions(answer, lambda s, y: tuple(torch.tensor(v, dtype=torch.float64) for v in
                                                 f1max_threshold(s.numpy(), y.numpy())),
                      random_cases(_score_inputs, [(3,), (40,)])
                      + random_cases(_tied_inputs, [(60,)], seed=1), 1e-9, 1e-12)


def _scanned_tokens(profile: str, plan: str) -> int:
    """Tokens read per image by all HSS blocks: sum over stages of depth x H_s W_s x K_s."""
    cfg = preset(profile, scan_plan=plan)
    return sum(depth * H * W * stage.num_directions for depth, stage, (H, W) in
               zip(cfg.depths, cfg.plan().stages, stage_sizes(cfg.image_size), strict=True))


def check_plan_cut(answer) -> None:
    ratio = _scanned_tokens("paper", "decay_deep") / _scanned_tokens("paper", "uniform")
    compare_number(answer, ratio, 1e-3, "your ratio")


def check_saved_bytes(answer) -> None:
    got = require_keys(answer, ("default", "no_checkpoint"), "your answer")
    if min(got.values()) <= 0 or any(not float(v).is_integer() for v in got.values()):
        raise Wrong("saved_for_backward_bytes returns a positive number of bytes (an int)")
    if got["no_checkpoint"] <= got["default"]:
        raise Wrong("without recomputing the matrix path autograd should keep more, not less: "
                    "did you pass checkpoint_matrix=False to the second model?")


EXERCISES = {
    "ch00.ex1": Exercise("conceptual", "what the small profile changes"),
    "ch00.ex2": Exercise("conceptual", "who picks the default profile"),
    "ch00.ex3": Exercise("numeric", "MambaAD's learning rate for a batch of 32", lambda a: (
        compare_number(a, 0.005 * 32 / 16, 1e-12, "your learning rate")),
        "the rule is printed under the profile table"),
    "ch00.ex4": Exercise("measure", "parameters per profile", check_profile_params,
                         "build_model('mambaadv2', profile, pretrained=False); sum p.numel() "
                         "over model.trainable_parameters()"),
    "ch00.ex5": Exercise("numeric", "images seen by the tiny profile's run", lambda a: (
        compare_number(a, PROFILES["tiny"].batch_size * PROFILES["tiny"].num_steps, 0,
                       "your count")), "batch size times number of steps, from PROFILES"),
    "ch01.ex1": Exercise("measure", "metrics under an increasing affine map",
                         check_affine_invariance, "metrics after minus metrics before, for every "
                         "key of compute_metrics"),
    "ch01.ex2": Exercise("measure", "missing the smallest defect", check_missed_defect,
                         "the smallest defect is the last image; drop = before - after"),
    "ch01.ex3": Exercise("code", "average precision", check_average_precision,
                         "sort by score, descending; AP = sum over positives of the precision "
                         "at their rank, divided by the number of positives (no tied scores "
                         "here); return a float"),
    "ch01.ex4": Exercise("conceptual", "why refuse a mask on a good image"),
    "ch11.ex1": Exercise("conceptual", "why resuming is exact"),
    "ch11.ex2": Exercise("conceptual", "no weight decay on biases and norms"),
    "ch11.ex3": Exercise("code", "the optimiser groups", check_param_groups,
                         "two groups, dicts with 'params' and 'weight_decay'; skip parameters "
                         "that do not require gradients; a tensor's .dim() decides"),
    "ch11.ex4": Exercise("measure", "train with one switch changed", check_training_change,
                         "two runs of train(TrainConfig(..., steps=20)) in fresh folders; the "
                         "last loss is meta['history'][-1]['loss']"),
    "ch11.ex5": Exercise("conceptual", "what the small profile trains"),
    "ch12.ex1": Exercise("conceptual", "which scale sees which defect"),
    "ch12.ex2": Exercise("measure", "the mean of the map as image score", check_mean_score,
                         "scores = maps.flatten(1).mean(1) instead of .amax(1); I-AUROC from "
                         "mambaadv2_ref.metrics.image_metrics"),
    "ch12.ex3": Exercise("conceptual", "why not pick the threshold on the test set"),
    "ch12.ex4": Exercise("code", "the F1-optimal threshold", check_f1_threshold,
                         "try every distinct score as threshold t (predict anomalous when "
                         "score >= t); return (best F1, its t); on ties keep the larger t"),
    "ch13.ex1": Exercise("numeric", "the token cut of decay_deep", check_plan_cut,
                         "per stage: blocks x tokens x directions, from preset('paper', ...)"),
    "ch13.ex2": Exercise("conceptual", "windows make the matrix path linear"),
    "ch13.ex3": Exercise("measure", "memory kept for the backward pass", check_saved_bytes,
                         "saved_for_backward_bytes(lambda: net(images)) for two tiny models, one "
                         "with checkpoint_matrix=False"),
    "ch13.ex4": Exercise("conceptual", "benchmark ratios on another machine"),
}

