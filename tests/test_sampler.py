"""The class-balanced data order (`StepBatchSampler(..., labels=...)`): every global batch and every
rank's shard holds each class in proportion to its share of the dataset, within one image, while
batch t stays a pure function of (seed, t), a resume replays it, and the ranks' batches partition
the global batch of one process (drop_last as before)."""

from __future__ import annotations

import random
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from mambaadv2_ref.sampler import StepBatchSampler, class_batch_counts, split_among_ranks

# (class sizes, world_size, batch_size): uneven classes, classes smaller than a global batch, a
# class of one image, images left over each epoch (drop_last), one process
CASES = [((13, 5, 29, 2), 2, 3), ((40, 7, 7, 1, 19), 4, 2), ((9, 9), 3, 1),
         ((50, 3, 11), 1, 8), ((6, 25, 14, 30), 3, 4)]


def _labels(sizes: tuple[int, ...]) -> list[str]:
    """One class name per item, sizes[c] items of class c, in a fixed random item order."""
    labels = [f"class{c}" for c, size in enumerate(sizes) for _ in range(size)]
    random.Random(0).shuffle(labels)
    return labels


def _rank_batches(labels, world_size, batch_size, epochs, balanced=True, seed=0, start=0):
    """Every rank's batches (lists of item indices) for `epochs` epochs from step `start`."""
    steps = epochs * (len(labels) // (world_size * batch_size))
    return [list(StepBatchSampler(len(labels), batch_size, steps, seed, start_step=start, rank=r,
                                  world_size=world_size, labels=labels if balanced else None))
            for r in range(world_size)]


def _worst_deviation(sizes, world_size, batch_size, balanced, seed=0) -> Fraction:
    """The largest |images of a class - its proportional share| over every global batch and
    every rank's shard of each of 2 epochs (share = images x size / dataset length)."""
    labels, n = _labels(sizes), sum(sizes)
    steps_per_epoch = n // (world_size * batch_size)
    ranks = _rank_batches(labels, world_size, batch_size, 2, balanced, seed)

    def deviation(items: list[int]) -> Fraction:
        held = Counter(labels[i] for i in items)
        return max(abs(held[f"class{c}"] - Fraction(len(items) * s, n))
                   for c, s in enumerate(sizes))

    worst = Fraction(0)
    for epoch in range(2):
        steps = range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
        for batches in ranks:  # the rank's shard of the epoch
            worst = max(worst, deviation([i for t in steps for i in batches[t]]))
        for t in steps:  # the global batch
            worst = max(worst, deviation([i for batches in ranks for i in batches[t]]))
    return worst


@pytest.mark.parametrize("sizes, world_size, batch_size", CASES)
def test_balanced_batches_and_rank_shards_hold_each_class_in_proportion(sizes, world_size,
                                                                        batch_size):
    for seed in (0, 1):
        assert _worst_deviation(sizes, world_size, batch_size, True, seed) < 1


def test_shuffled_order_does_not_balance_classes():
    """The check above fails for the default shuffled order: it can."""
    assert max(_worst_deviation(*case, balanced=False) for case in CASES) > 1


def test_balanced_batches_are_a_function_of_seed_and_step_and_a_resume_replays_them():
    labels, world_size, batch_size = _labels((13, 5, 29, 2)), 3, 2
    steps_per_epoch = len(labels) // (world_size * batch_size)  # 8
    straight = _rank_batches(labels, world_size, batch_size, 3)
    for start in (steps_per_epoch + 3, 2 * steps_per_epoch):  # mid-epoch and at an epoch start
        assert _rank_batches(labels, world_size, batch_size, 3, start=start) == [
            batches[start:] for batches in straight]
    for rank, batches in enumerate(straight):  # any step on its own, in any order
        sampler = StepBatchSampler(len(labels), batch_size, len(batches), 0, rank=rank,
                                   world_size=world_size, labels=labels)
        assert [sampler.batch(t) for t in reversed(range(len(batches)))] == batches[::-1]
    epoch = [sorted(b) for b in straight[0][:steps_per_epoch]]
    assert epoch != [sorted(b) for b in straight[0][steps_per_epoch:2 * steps_per_epoch]]
    assert straight != _rank_batches(labels, world_size, batch_size, 3, seed=1)


@pytest.mark.parametrize("sizes, world_size, batch_size", CASES)
def test_balanced_rank_batches_partition_the_global_batch(sizes, world_size, batch_size):
    labels, n = _labels(sizes), sum(sizes)
    steps_per_epoch = n // (world_size * batch_size)
    single = _rank_batches(labels, 1, world_size * batch_size, 2)[0]
    ranks = _rank_batches(labels, world_size, batch_size, 2)
    assert len(single) == 2 * steps_per_epoch
    for t, batch in enumerate(single):
        parts = [batches[t] for batches in ranks]
        assert all(len(part) == batch_size for part in parts)
        assert sorted(sum(parts, [])) == sorted(batch)  # disjoint, and the one-process batch
    epochs = [sum(single[e * steps_per_epoch:(e + 1) * steps_per_epoch], []) for e in (0, 1)]
    for used in epochs:  # drop_last: every image at most once, n - T G left over
        assert len(set(used)) == len(used) == steps_per_epoch * world_size * batch_size
    if n % (world_size * batch_size):
        assert set(epochs[0]) != set(epochs[1])  # the left-over images change every epoch


def test_labels_of_the_wrong_length_are_refused_naming_them():
    with pytest.raises(ValueError, match=r"labels has 3 entries.*num_items=4"):
        StepBatchSampler(4, 2, 1, seed=0, labels=["a", "b", "a"])


def test_class_counts_and_rank_split_on_random_datasets():
    """`class_batch_counts` and `split_among_ranks` on 150 random datasets, checked exactly:
    batch t holds floor or ceil of G p_c, the first t batches floor or ceil of t G p_c, every
    rank B images of each batch and floor or ceil of R_c / W of class c over the epoch."""
    rng = random.Random(7)
    for _ in range(150):
        sizes = [rng.choice((1, 2, 3, 10, 40, 120)) + rng.randint(0, 9)
                 for _ in range(rng.randint(1, 12))]
        world_size, batch_size = rng.choice((1, 2, 3, 4, 8)), rng.randint(1, 6)
        n, g = sum(sizes), world_size * batch_size
        if n < g:
            continue
        counts = class_batch_counts(sizes, g, n // g)
        assert (counts.sum(1) == g).all()
        for c, size in enumerate(sizes):
            share = Fraction(g * size, n)
            assert all(abs(m - share) < 1 for m in counts[:, c]), (sizes, g)
            assert all(abs(m - (t + 1) * share) < 1
                       for t, m in enumerate(counts[:, c].cumsum())), (sizes, g)
        x = split_among_ranks(counts, world_size)
        assert (x >= 0).all() and (x.sum(2) == batch_size).all() and (x.sum(1) == counts).all()
        totals = x.sum(0)
        assert (totals.max(0) - totals.min(0) <= 1).all(), (sizes, world_size, batch_size)


def test_rank_split_repairs_a_class_the_round_robin_gives_one_rank():
    """Every batch: 1 image of class 0, 3 of class 1; dealt round robin rank 0 would take every
    class-0 image."""
    counts = np.array([[1, 3]] * 6)
    x = split_among_ranks(counts, 2)
    assert x[:, :, 0].sum(0).tolist() == [3, 3] and x[:, :, 1].sum(0).tolist() == [9, 9]
