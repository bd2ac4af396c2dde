"""Threshold sweeps for binary scores: ROC and precision-recall counts, AUROC, AP, F1max.

Both ways of counting give, for thresholds t_1 > t_2 > ... (a prediction is positive when
score >= t_k), the cumulative true and false positive counts TP_k and FP_k:

- exact: every distinct score is a threshold (sort the scores; what scikit-learn does);
- binned: scores are bucketed into `num_bins` equal-width bins between their min and max and
  counted with histograms, streaming over chunks, so memory stays O(chunk + bins) for the
  N x H x W pixels of a large test set. Binned counts are exactly the exact counts of the
  bucketed scores (tested), and approach the exact metrics as bins grow.

From the counts, with P positives and N negatives:

    AUROC = trapezoid of TPR = TP/P over FPR = FP/N, from (0, 0)             (1)
    AP    = sum_k (R_k - R_{k-1}) * P_k,  P_k = TP_k/(TP_k+FP_k), R_k = TP_k/P  (2)
    F1max = max_k 2 TP_k / (TP_k + FP_k + P)                                  (3)

How far an AUROC A measured on P positives and N negatives may be from the model's true one
(Hanley and McNeil, 1982, with Q1 = A / (2 - A), Q2 = 2 A^2 / (1 + A)):

    SE(A) = sqrt((A (1 - A) + (P - 1)(Q1 - A^2) + (N - 1)(Q2 - A^2)) / (P N))      (4)

Two detectors a, b scored on the same test images: their AUROCs are correlated, and the standard
error of the difference D = A_a - A_b is far smaller than (4) applied to each (DeLong, DeLong
and Clarke-Pearson, 1988). With psi(u, v) = 1 if u > v, 1/2 if u = v, else 0, each anomalous
image i and normal image j get their structural components for each detector r,

    V_r(i) = (1/N) sum_j psi(s_r(i), s_r(j)),   W_r(j) = (1/P) sum_i psi(s_r(i), s_r(j)),

A_r = mean_i V_r(i) = mean_j W_r(j), and with d_V(i) = V_a(i) - V_b(i), d_W(j) = W_a(j) - W_b(j):

    SE(D) = sqrt(var_i d_V / P + var_j d_W / N)      (sample variances, n - 1)       (5)

(3) is 2PR/(P+R) rewritten with counts; it is the max over the whole PR curve (exact), not
ADer's max over 20 normalised thresholds 0, 0.05, ..., 1 for pixels, which can only be lower.

Glossary: scores s, labels y in {0, 1}, tps TP_k, fps FP_k.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def exact_counts(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (TP_k, FP_k) at every distinct score, thresholds descending.

    Args:
        scores: (M,) finite floats. labels: (M,) bool or {0, 1}.

    Returns:
        tps, fps: int64 arrays (K,), K = number of distinct scores.

    Memory: ~32 bytes per score at peak (sort order, sorted scores, counts; measured).
    """
    scores = np.asarray(scores).ravel()
    labels = np.asarray(labels).ravel().astype(bool, copy=False)
    order = np.argsort(scores)[::-1]  # descending; the order within ties does not matter
    sorted_scores = scores[order]
    last_of_run = np.r_[np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]),
                        sorted_scores.size - 1]
    del sorted_scores
    tps = np.cumsum(labels[order], dtype=np.int64)[last_of_run]
    fps = last_of_run + 1 - tps
    return tps, fps


def binned_counts(
    chunks: Iterable[tuple[np.ndarray, np.ndarray]], lo: float, hi: float, num_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (TP_k, FP_k) at num_bins equal-width bins over [lo, hi], thresholds descending.

    Args:
        chunks: iterable of (scores, labels) arrays of any matching shape, e.g. one image each.
        lo, hi: range of all scores (bins: floor((s - lo) / (hi - lo) * num_bins), clipped).
        num_bins: number of bins (thresholds).

    Returns:
        tps, fps: int64 arrays (num_bins,), the exact counts of the bucketed scores.
    """
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}")
    pos = np.zeros(num_bins, np.int64)
    neg = np.zeros(num_bins, np.int64)
    for scores, labels in chunks:
        b = bin_index(np.asarray(scores).ravel(), lo, hi, num_bins)
        y = np.asarray(labels).ravel().astype(bool)
        pos += np.bincount(b[y], minlength=num_bins)
        neg += np.bincount(b[~y], minlength=num_bins)
    return np.cumsum(pos[::-1]), np.cumsum(neg[::-1])


def bin_index(scores: np.ndarray, lo: float, hi: float, num_bins: int) -> np.ndarray:
    """Equal-width bin of each score in [lo, hi] (the top edge goes to the last bin)."""
    width = (hi - lo) / num_bins if hi > lo else 1.0
    b = np.floor((scores.astype(np.float64) - lo) / width).astype(np.int64)
    return np.clip(b, 0, num_bins - 1)


def _totals(tps: np.ndarray, fps: np.ndarray) -> tuple[int, int]:
    num_pos, num_neg = int(tps[-1]), int(fps[-1])
    if num_pos == 0 or num_neg == 0:
        raise ValueError(f"need positives and negatives, got P={num_pos}, N={num_neg}")
    return num_pos, num_neg


def auroc_from_counts(tps: np.ndarray, fps: np.ndarray) -> float:
    """Area under the ROC curve from cumulative counts.

    Args:
        tps, fps: (K,) cumulative counts at descending thresholds (last = all positive).

    Returns:
        AUROC in [0, 1].

    Implements: eq. (1).
    """
    num_pos, num_neg = _totals(tps, fps)
    tpr = np.r_[0.0, tps / num_pos]
    fpr = np.r_[0.0, fps / num_neg]
    return float(np.trapezoid(tpr, fpr))


def auroc_standard_error(auroc: float, num_pos: int, num_neg: int) -> float:
    """Standard error of an AUROC measured on a finite test set (Hanley and McNeil, 1982).

    Args:
        auroc: the measured AUROC A in [0, 1] (not percent).
        num_pos, num_neg: P anomalous and N normal test images (each >= 1).

    Returns:
        SE(A), in the units of `auroc`. Two AUROCs of different detectors on the same images
        that differ by less than about 2 SE cannot be told apart by that test set.

    Implements: eq. (4).
    """
    if not 0.0 <= auroc <= 1.0:
        raise ValueError(f"auroc must be in [0, 1] (a fraction, not percent), got {auroc}")
    if num_pos < 1 or num_neg < 1:
        raise ValueError(f"need num_pos >= 1 and num_neg >= 1, got {num_pos}, {num_neg}")
    q1, q2 = auroc / (2 - auroc), 2 * auroc**2 / (1 + auroc)
    var = (auroc * (1 - auroc) + (num_pos - 1) * (q1 - auroc**2)
           + (num_neg - 1) * (q2 - auroc**2)) / (num_pos * num_neg)
    return float(np.sqrt(max(var, 0.0)))


def ap_from_counts(tps: np.ndarray, fps: np.ndarray) -> float:
    """Average precision (step-wise area under the PR curve, as scikit-learn) from counts.

    Args:
        tps, fps: (K,) cumulative counts at descending thresholds.

    Returns:
        AP in [0, 1].

    Implements: eq. (2).
    """
    num_pos, _ = _totals(tps, fps)
    predicted = tps + fps
    precision = np.divide(tps, predicted, out=np.ones(len(tps)), where=predicted > 0)
    recall = tps / num_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def f1max_from_counts(tps: np.ndarray, fps: np.ndarray) -> tuple[float, int]:
    """Best F1 over all thresholds, and the index k of the threshold that reaches it.

    Args:
        tps, fps: (K,) cumulative counts at descending thresholds.

    Returns:
        (F1max in [0, 1], k).

    Implements: eq. (3).
    """
    num_pos, _ = _totals(tps, fps)
    f1 = 2 * tps / (tps + fps + num_pos)
    k = int(np.argmax(f1))
    return float(f1[k]), k


def f1max_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """F1max of image scores and the score threshold (predict anomalous when s >= t) reaching it.

    Args:
        scores: (M,) finite floats. labels: (M,) {0, 1}.

    Returns:
        (F1max, t).
    """
    scores = np.asarray(scores).ravel()
    tps, fps = exact_counts(scores, labels)
    f1, k = f1max_from_counts(tps, fps)
    thresholds = np.unique(scores)[::-1]  # same order as the counts
    return f1, float(thresholds[k])


def structural_components(scores: np.ndarray, labels: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components of one detector's AUROC.

    Args:
        scores: (M,) image scores s (higher = more anomalous).
        labels: (M,) 1 anomalous, 0 normal; both classes present.

    Returns:
        V (P,) for the anomalous images and W (N,) for the normal ones, with
        V(i) = mean_j psi(s(i), s(j)), W(j) = mean_i psi(s(i), s(j)); their means are the AUROC.

    Implements: the components of eq. (5) (O(P N) memory: meant for image scores).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"labels need both anomalous (1) and normal (0) images, got "
                         f"{len(pos)} anomalous and {len(neg)} normal")
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


def paired_auroc_difference(scores_a: np.ndarray, scores_b: np.ndarray,
                            labels: np.ndarray) -> tuple[float, float]:
    """The AUROC difference of two detectors on the same images and its standard error.

    Args:
        scores_a, scores_b: (M,) the two detectors' scores of the same M images, in the same
            order (any scale: only each detector's own ranking counts).
        labels: (M,) 1 anomalous, 0 normal; at least two of each.

    Returns:
        (D, SE(D)) as fractions: D = AUROC_a - AUROC_b; a |D| above about 2 SE(D) is a
        difference this test set shows.

    Implements: eq. (5).
    """
    scores_a, scores_b, labels = (np.asarray(x) for x in (scores_a, scores_b, labels))
    if not (scores_a.shape == scores_b.shape == labels.shape) or labels.ndim != 1:
        raise ValueError(f"scores_a, scores_b and labels must be 1-d of one length (the same "
                         f"images), got shapes {scores_a.shape}, {scores_b.shape}, "
                         f"{labels.shape}")
    if min(int((labels == 1).sum()), int((labels == 0).sum())) < 2:
        raise ValueError("labels need at least two anomalous (1) and two normal (0) images")
    v_a, w_a = structural_components(scores_a, labels)
    v_b, w_b = structural_components(scores_b, labels)
    d_v, d_w = v_a - v_b, w_a - w_b
    var = d_v.var(ddof=1) / len(d_v) + d_w.var(ddof=1) / len(d_w)
    return float(d_v.mean()), float(np.sqrt(var))

