"""The data order of training: the batch of step t is a pure function of (seed, t).

That is what makes a resumed run replay exactly the batches a straight run sees. Two orders:

- shuffled (the default): each epoch a random permutation of the images (`DistributedSampler`),
  rank r taking every world_size-th image of it;
- class-balanced (`labels` given): each epoch, every global batch and every rank's shard holds
  each class in proportion to its share of the dataset, within one image
  (`class_batch_counts`, `split_among_ranks`).

Both keep: ranks' batches of step t are disjoint and together are the batch of step t of one
process with batch_size x world_size (the global batch); an epoch has
steps_per_epoch = num_items // (batch_size x world_size) full batches, the images left over are
not used that epoch (drop_last), and they differ from epoch to epoch.

Glossary: G = batch_size x world_size (global batch), n = num_items, p_c = n_c / n (class c's
share), T = steps_per_epoch, R_c the images of class c used in an epoch.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import torch
from torch.utils.data import DistributedSampler


def class_batch_counts(class_sizes: Sequence[int], global_batch: int,
                       num_batches: int) -> np.ndarray:
    """How many images of each class each global batch of an epoch holds.

    Batch t holds floor(G p_c) or floor(G p_c) + 1 images of class c, and the first t batches
    together floor(t G p_c) or ceil(t G p_c), so no class runs out before the epoch ends. The
    G - sum_c floor(G p_c) images left in every batch go one each to classes that are due,
    earliest deadline first: class c's j-th extra image may come in batch t once j <= ceil(t f_c)
    and must come by the first t with floor(t f_c) >= j (f_c = G p_c - floor(G p_c)).
    tests/test_sampler.py checks both bounds exactly on random datasets.

    Args:
        class_sizes: n_c, the images of each class (n = their sum).
        global_batch: G.
        num_batches: batches in the epoch (at most n // G).

    Returns:
        (num_batches, len(class_sizes)) int array; every row sums to G.
    """
    n = sum(class_sizes)
    base = np.array([global_batch * s // n for s in class_sizes])
    rest = [global_batch * s % n for s in class_sizes]  # f_c = rest_c / n
    extras = global_batch - int(base.sum())
    given = [0] * len(class_sizes)  # extra images class c has had so far
    counts = np.tile(base, (num_batches, 1))
    for t in range(1, num_batches + 1):
        due = [c for c, r in enumerate(rest) if given[c] * n < t * r]  # given_c < t f_c
        due.sort(key=lambda c: (-(-(given[c] + 1) * n // rest[c]), c))  # by deadline
        for c in due[:extras]:
            given[c] += 1
            counts[t - 1, c] += 1
    return counts


def split_among_ranks(counts: np.ndarray, world_size: int) -> np.ndarray:
    """How many images of each class every rank takes from every global batch.

    Over the epoch every rank holds floor(R_c / W) or ceil(R_c / W) images of class c (R_c =
    counts[:, c].sum(), W = world_size): an equitable W-colouring of the edges of the batches x
    classes multigraph (de Werra). Start: each batch's images sorted by class and dealt round
    robin (every rank B of them). Then, while the totals of some class c on two ranks hi, lo
    differ by 2 or more, `_move_one` moves one image of class c from hi to lo without changing
    any batch's share per rank; each move lowers sum_(rank, class) total^2, so this ends.

    Args:
        counts: (T, K) images per global batch and class (`class_batch_counts`); every row sums
            to W x B.
        world_size: W.

    Returns:
        (T, W, K) int array x: x[t, r].sum() == B, x[t, :, c].sum() == counts[t, c].
    """
    num_batches, num_classes = counts.shape
    x = np.zeros((num_batches, world_size, num_classes), dtype=np.int64)
    for t, row in enumerate(counts):
        dealt = np.arange(row.sum()) % world_size
        np.add.at(x[t], (dealt, np.repeat(np.arange(num_classes), row)), 1)
    while True:
        totals = x.sum(0)  # (W, K)
        spread = totals.max(0) - totals.min(0)
        c = int(spread.argmax())
        if spread[c] <= 1:
            return x
        _move_one(x, totals, c, int(totals[:, c].argmax()), int(totals[:, c].argmin()))


def _move_one(x: np.ndarray, totals: np.ndarray, c: int, hi: int, lo: int) -> None:
    """Move one image of class c from rank hi to rank lo in `x` (T, W, K), in place, keeping
    every batch's images per rank.

    Walks an alternating trail: from class c along an image of rank hi (batch t), back along an
    image of rank lo in the same batch (class d), and on from d, until a class d that rank lo
    holds more of than rank hi (totals (W, K)); then the walked images swap ranks. Every batch
    on the trail swaps one image each way; class c moves one image from hi to lo, class d one
    from lo to hi, the classes between none. The walk cannot get stuck: every batch holds as
    many images of hi as of lo, and every class it passes holds at least as many of hi.
    """
    left_hi, left_lo = x[:, hi].copy(), x[:, lo].copy()  # (T, K) images not walked yet
    v = c
    while True:
        t = int(np.flatnonzero(left_hi[:, v])[0])
        left_hi[t, v] -= 1
        d = int(np.flatnonzero(left_lo[t])[0])
        left_lo[t, d] -= 1
        if totals[lo, d] > totals[hi, d]:
            break
        v = d
    walked_hi, walked_lo = x[:, hi] - left_hi, x[:, lo] - left_lo
    x[:, hi] += walked_lo - walked_hi
    x[:, lo] += walked_hi - walked_lo


class StepBatchSampler:
    """Index batches for steps `start_step .. num_steps-1`; batch t depends only on (seed, t).

    Epoch e = t // steps_per_epoch has one order per rank seeded with (seed, e); batch t is
    slice t % steps_per_epoch of it (drop_last). Resuming at step t therefore replays exactly
    the batches a straight run sees.

    - labels None: the order is rank's shard of `DistributedSampler`'s permutation.
    - labels given: the images of each class are shuffled (seed + e), `class_batch_counts` says
      how many of each class every global batch holds (taken in that shuffled order),
      `split_among_ranks` how many of those each rank takes. So global batch t holds
      floor(G p_c) or floor(G p_c) + 1 images of class c, and each rank's shard of the epoch
      floor(T B p_c) or ceil(T B p_c) (both within one image of proportional); which images a
      global batch holds does not depend on world_size.

    Args:
        num_items: dataset length.
        batch_size: per-rank batch size B.
        num_steps: last step (exclusive).
        seed: data-order seed.
        start_step: first step.
        rank, world_size: process rank and count (1 = single process).
        labels: None, or the class of every item (num_items hashable ids, e.g. class names),
            for the class-balanced order.
    """

    def __init__(self, num_items: int, batch_size: int, num_steps: int, seed: int,
                 start_step: int = 0, rank: int = 0, world_size: int = 1,
                 labels: Sequence[Hashable] | None = None):
        self.sampler = DistributedSampler(range(num_items), num_replicas=world_size, rank=rank,
                                          shuffle=True, seed=seed, drop_last=True)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.steps_per_epoch = len(self.sampler) // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size={batch_size} x world_size={world_size} exceeds the "
                             f"{num_items} training images; lower it with --set batch_size=N")
        self.num_steps, self.start_step = num_steps, start_step
        self.class_items = None  # the item indices of each class, when balancing classes
        if labels is not None:
            if len(labels) != num_items:
                raise ValueError(f"labels has {len(labels)} entries, expected one class per "
                                 f"item (num_items={num_items})")
            classes = {label: [] for label in labels}
            for i, label in enumerate(labels):
                classes[label].append(i)
            self.class_items = list(classes.values())

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's item indices of epoch `epoch`, batch after batch (at least
        steps_per_epoch x batch_size of them; the shuffled order holds the whole shard)."""
        if self.class_items is None:
            self.sampler.set_epoch(epoch)
            return list(self.sampler)
        g = torch.Generator().manual_seed(self.seed + epoch)
        pools = [[items[i] for i in torch.randperm(len(items), generator=g).tolist()]
                 for items in self.class_items]
        counts = class_batch_counts([len(p) for p in pools], self.batch_size * self.world_size,
                                    self.steps_per_epoch)
        shares = split_among_ranks(counts, self.world_size)  # (T, W, K)
        taken = np.concatenate([np.zeros((1, counts.shape[1]), dtype=np.int64),
                                counts.cumsum(0)[:-1]])  # images of class c before batch t
        order = []
        for t, share in enumerate(shares):
            first = taken[t] + share[:self.rank].sum(0)  # (K,) this rank's first image per class
            for c, pool in enumerate(pools):
                order += pool[first[c]:first[c] + share[self.rank, c]]
        return order

    def batch(self, step: int, order: list[int] | None = None) -> list[int]:
        """Indices of the batch of step `step` (optionally given that epoch's order)."""
        epoch, b = divmod(step, self.steps_per_epoch)
        if order is None:
            order = self.epoch_order(epoch)
        return order[b * self.batch_size:(b + 1) * self.batch_size]

    def __iter__(self):
        epoch, order = None, None
        for step in range(self.start_step, self.num_steps):
            if step // self.steps_per_epoch != epoch:
                epoch = step // self.steps_per_epoch
                order = self.epoch_order(epoch)
            yield self.batch(step, order)

    def __len__(self) -> int:
        return max(0, self.num_steps - self.start_step)
