"""The data order of training: the batch of step t is a pure function of (seed, t).

That is what makes a resumed run replay exactly the batches a straight run sees.
"""

from __future__ import annotations

from torch.utils.data import DistributedSampler


class StepBatchSampler:
    """Index batches for steps `start_step .. num_steps-1`; batch t depends only on (seed, t).

    Epoch e = t // steps_per_epoch is the permutation of `DistributedSampler` seeded with
    (seed, e) (rank's shard when distributed); batch t is slice t % steps_per_epoch of it
    (drop_last). Resuming at step t therefore replays exactly the batches a straight run sees.

    Args:
        num_items: dataset length.
        batch_size: per-rank batch size.
        num_steps: last step (exclusive).
        seed: data-order seed.
        start_step: first step.
        rank, world_size: process rank and count (1 = single process).
    """

    def __init__(self, num_items: int, batch_size: int, num_steps: int, seed: int,
                 start_step: int = 0, rank: int = 0, world_size: int = 1):
        self.sampler = DistributedSampler(range(num_items), num_replicas=world_size, rank=rank,
                                          shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.steps_per_epoch = len(self.sampler) // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size={batch_size} x world_size={world_size} exceeds the "
                             f"{num_items} training images; lower it with --set batch_size=N")
        self.num_steps, self.start_step = num_steps, start_step

    def batch(self, step: int, order: list[int] | None = None) -> list[int]:
        """Indices of the batch of step `step` (optionally given that epoch's order)."""
        epoch, b = divmod(step, self.steps_per_epoch)
        if order is None:
            self.sampler.set_epoch(epoch)
            order = list(self.sampler)
        return order[b * self.batch_size:(b + 1) * self.batch_size]

    def __iter__(self):
        epoch, order = None, None
        for step in range(self.start_step, self.num_steps):
            if step // self.steps_per_epoch != epoch:
                epoch = step // self.steps_per_epoch
                self.sampler.set_epoch(epoch)
                order = list(self.sampler)
            yield self.batch(step, order)

    def __len__(self) -> int:
        return max(0, self.num_steps - self.start_step)
