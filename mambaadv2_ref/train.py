"""Training: one model on all classes (multi-class), MambaAD's recipe, exact resume.

Recipe (book appendix A.1): loss = sum_k 5 MSE(enc_k, dec_k); AdamW (lr 0.005 x batch/16,
betas 0.9/0.999, wd 1e-4, no weight decay on 1-D parameters and biases); gradient norm clipped at
5; one x0.1 learning-rate step at 80% of the steps; no augmentation. bf16 autocast on GPUs that
compute in bf16 natively (`runtime.use_bf16`, setting `precision`), float32 elsewhere. One
step is `train_step`: `train` runs it on the data, `studies.speed.bench_model` on random images.

Exact resume: the batch of step t is a pure function of (seed, t) (`sampler.StepBatchSampler`), the
learning rate a pure function of t (`step_lr`), and the checkpoint holds the weights, the AdamW
state and the RNG states; so 6 steps straight and 3 + resume 3 give identical weights.

Safety of a run (`run_safety`; each case is an error before any work, or a kept checkpoint):
- `out` is checked first: a file, a read-only folder, too little free disk for a checkpoint, an
  existing run without `resume`/`force`, `resume=True` without a checkpoint are errors; `force`
  deletes the old run's checkpoint, metrics.json, maps/ and snapshots/ (nothing else) once
  every check has passed, just before training starts.
- every image and mask is opened up front (`data.check_dataset`), so a bad file is named now.
- checkpoints are written every `checkpoint_minutes` (10 by default), every `checkpoint_every`
  steps when given (and every `snapshot_every` steps, whose weights are also kept in
  RUN/snapshots/), at the end, and on Ctrl-C (at the end of the step in progress; a second
  Ctrl-C quits at once), then `TrainingInterrupted` says how to resume.
- a NaN/inf loss stops training (checked at every log record and before every save) with
  `TrainingDiverged`; the last checkpoint written before it is kept untouched.
- the run records the dataset's absolute path and `data.dataset_fingerprint` (file names and
  sizes); resuming on a changed dataset is an error naming what differs.
- with `statistics_holdout` = K > 0, K good training images per class (`data.holdout`, eq. H1)
  are excluded from the training dataset (`MVTecDataset(..., exclude=...)`) and listed in the
  run's JSON (`train.statistics_holdout_files`) for `evaluate --readout z`; the fingerprint
  still covers them, `num_train_images` counts only the trained images, and a resume cannot
  change K.

Distributed: launched by torchrun (WORLD_SIZE > 1) it wraps the model in DDP, shards every epoch
with `DistributedSampler` (or class-balanced: setting `balance_classes`), and logs and checkpoints
on rank 0 only. A resume continues exactly on every rank (tests/test_ddp.py): each rank reads rank
0's checkpoint from `out` (a folder all ranks see) and restores its weights, AdamW state and RNG
states (the ranks' RNG states are equal anyway: same seed, same draws), and its sampler restarts
at the checkpoint's step.

Glossary: `num_steps` total steps; `steps_per_epoch` full batches per epoch and rank; `lr` base
learning rate; `history` logged (step, loss, lr, images/s, data_wait_s: the mean seconds per
step the loop waited for its batch, decoding it itself with num_workers=0) records.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mambaadv2_ref.blocks.compiled import compile_notice
from mambaadv2_ref.checkpoint import (
    MANIFEST,
    load_checkpoint,
    save_checkpoint,
    save_snapshot,
    set_rng_state,
)
from mambaadv2_ref.config import get_profile, scaled_lr
from mambaadv2_ref.config_tools import config_diff
from mambaadv2_ref.data import (
    MVTecDataset,
    check_dataset,
    dataset_fingerprint,
    embedded_dataset_root,
)
from mambaadv2_ref.data.holdout import HOLDOUT_RULE, choose_holdout, holdout_record
from mambaadv2_ref.model.detectors import build_detector
from mambaadv2_ref.model.loss import reconstruction_loss
from mambaadv2_ref.recipe import lr_plan, make_optimizer, step_lr
from mambaadv2_ref.run_safety import (
    CtrlC,
    TrainingInterrupted,
    check_finite_loss,
    check_free_space,
    clear_run,
    prepare_out,
)
from mambaadv2_ref.runtime import resolve_device, seed_everything, tf32_matmuls, use_bf16
from mambaadv2_ref.sampler import StepBatchSampler
from mambaadv2_ref.train_config import RESUME_DEFAULTS, RESUME_KEYS, TrainConfig


def steady_images_per_s(history: list[dict]) -> float:
    """Mean training images/s of a run's logged windows, without the first one (it holds the
    warm-up) unless it is the only one."""
    steady = history[1:] or history
    return sum(h["images_per_s"] for h in steady) / len(steady)


def train_step(model, optimizer, images: torch.Tensor, clip_grad: float = 5.0,
               bf16: bool = False) -> torch.Tensor:
    """One optimisation step; returns the loss (detached).

    Implements: loss = sum_k 5 MSE(enc_k, dec_k) (`reconstruction_loss`), backward, gradient
    norm clipped at `clip_grad`, AdamW step (book appendix A.1). The forward runs under bf16
    autocast when `bf16`; the loss is computed in float32.
    """
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        enc, dec = model(images)
    loss = reconstruction_loss([e.float() for e in enc], [d.float() for d in dec])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip_grad)
    optimizer.step()
    return loss.detach()


def _distributed() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's variables; init the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), world_size


def _num_steps(cfg: TrainConfig, steps_per_epoch: int, profile) -> int:
    if cfg.steps is not None and cfg.epochs is not None:
        raise ValueError("give either steps or epochs, not both")
    if cfg.epochs is not None:
        if cfg.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {cfg.epochs}")
        return cfg.epochs * steps_per_epoch
    steps = profile.num_steps if cfg.steps is None else cfg.steps
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return steps


def train(cfg: TrainConfig) -> dict:
    """Train (or fit, for PatchCore) a detector and checkpoint it to `cfg.out`.

    Args:
        cfg: a `TrainConfig`.

    Returns:
        the checkpoint manifest (dict) of the final state.
    """
    rank, local_rank, world_size = _distributed()
    device = resolve_device(cfg.device)
    if world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    profile = get_profile(cfg.profile)
    image_size = cfg.image_size or profile.image_size
    batch_size = cfg.batch_size or profile.batch_size
    lr = cfg.lr if cfg.lr is not None else scaled_lr(batch_size * world_size)
    seed_everything(cfg.seed)
    if rank == 0:
        resuming = prepare_out(cfg.out, cfg.resume, cfg.force)
    else:  # rank 0 checks (and with force clears) the folder; a resume needs its checkpoint
        resuming = bool(cfg.resume) and (Path(cfg.out) / MANIFEST).is_file()
    root = (Path(cfg.data) if cfg.data else embedded_dataset_root()).resolve()
    dataset = MVTecDataset(root, classes=cfg.classes, split="train", image_size=image_size)
    classes = list(dataset.classes)
    fingerprint = dataset_fingerprint(dataset.samples, root)  # of every train file, held out too
    held = choose_holdout(dataset.samples, cfg.statistics_holdout)  # {} without a hold-out
    if held:  # the held-out images never reach the training loader (nor PatchCore's bank)
        dataset = MVTecDataset(root, classes=classes, split="train", image_size=image_size,
                               exclude=[s.path for items in held.values() for s in items])
    has_test = all((root / c / "test").is_dir() for c in classes)
    check_dataset(root, classes, splits=("train", "test") if has_test else ("train",),
                  progress=rank == 0)
    model = build_detector(cfg.model, profile=profile.name, encoder=cfg.encoder,
                           pretrained=cfg.pretrained,
                           overrides={**cfg.model_overrides, "image_size": image_size}).to(device)
    settings = {"data": str(root), "embedded": cfg.data is None, "classes": classes,
                "data_fingerprint": fingerprint,
                "image_size": image_size, "batch_size": batch_size, "lr": lr, "seed": cfg.seed,
                "weight_decay": cfg.weight_decay, "clip_grad": cfg.clip_grad,
                "lr_decay_at": cfg.lr_decay_at, "lr_decay": cfg.lr_decay,
                "world_size": world_size, "num_train_images": len(dataset),
                "balance_classes": cfg.balance_classes,
                "statistics_holdout": cfg.statistics_holdout}
    if held:
        settings.update(statistics_holdout_rule=HOLDOUT_RULE,
                        statistics_holdout_files=holdout_record(held, root))
    meta = {"model": cfg.model, "model_config": model.config.to_dict(),
            "profile": profile.to_dict(), "train": settings, "history": [],
            "train_seconds": 0.0, "device": str(device)}
    if rank == 0:
        check_free_space(Path(cfg.out), model, with_optimizer=cfg.model != "patchcore")
        if cfg.force and not resuming:  # every check passed: only now the old run goes
            clear_run(cfg.out)
    if cfg.model == "patchcore":
        if world_size > 1:
            raise ValueError("patchcore fits its memory bank in one process; run it without "
                             "torchrun")
        return _fit_patchcore(model, dataset, batch_size, device, cfg, meta)

    sampler_probe = StepBatchSampler(len(dataset), batch_size, 1, cfg.seed, 0, rank, world_size)
    num_steps = _num_steps(cfg, sampler_probe.steps_per_epoch, profile)
    settings["num_steps"] = num_steps
    settings["lr_plan"] = lr_plan(num_steps, lr, cfg.lr_decay_at, cfg.lr_decay)
    optimizer = make_optimizer(model, lr, cfg.weight_decay)
    start = 0
    if resuming:
        start, meta = _resume(cfg, model, optimizer, meta)
    train_model = model
    if world_size > 1:  # the fusion's BatchNorm sees the global batch, as in one process
        synced = device.type == "cuda"  # SyncBatchNorm runs on GPUs only
        meta["train"]["batch_norm"] = "synchronised" if synced else "per process"
        if not synced and rank == 0:
            print("note: on CPUs BatchNorm statistics are per process (SyncBatchNorm needs "
                  "GPUs), so this run is not the one-process run of the same global batch")
        train_model = torch.nn.parallel.DistributedDataParallel(
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) if synced else model,
            device_ids=[device.index] if synced else None)
    labels = [s.cls for s in dataset.samples] if cfg.balance_classes else None
    sampler = StepBatchSampler(len(dataset), batch_size, num_steps, cfg.seed, start, rank,
                               world_size, labels=labels)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(cfg.seed))
    stop = num_steps if cfg.stop_at is None else min(cfg.stop_at, num_steps)
    bf16 = use_bf16(device, cfg.precision)
    meta["train"]["bf16_autocast"] = bf16
    meta["train"]["tf32_matmuls"] = cfg.precision == "tf32" and device.type == "cuda"
    every = cfg.checkpoint_every
    snapshot_every = cfg.snapshot_every
    seconds_between = 60.0 * cfg.checkpoint_minutes
    model.train()
    notice = compile_notice(model.config)
    if notice and rank == 0:
        print(notice, flush=True)
    bar = tqdm(total=stop, initial=start, disable=rank != 0, desc=f"train {cfg.model}")
    t_run = t_window = t_saved = time.perf_counter()
    saved, logged = (start if resuming else None), start
    window_steps, window_images, loss_sum = 0, 0, torch.zeros((), device=device)
    window_data_s, t_asked = 0.0, time.perf_counter()  # host time spent waiting for batches
    with CtrlC() as ctrl_c, tf32_matmuls(cfg.precision):
        for step, batch in zip(range(start, stop), loader, strict=False):
            window_data_s += time.perf_counter() - t_asked
            for group in optimizer.param_groups:
                group["lr"] = step_lr(step, num_steps, lr, cfg.lr_decay_at, cfg.lr_decay)
            images = batch["image"].to(device, non_blocking=True)
            loss_sum += train_step(train_model, optimizer, images, cfg.clip_grad, bf16)
            window_steps += 1
            window_images += images.shape[0] * world_size
            done = step + 1
            bar.update(1)
            now = time.perf_counter()
            snapshot = bool(snapshot_every) and done % snapshot_every == 0
            due = ((every and done % every == 0) or snapshot or done == stop or ctrl_c.requested
                   or (seconds_between and now - t_saved >= seconds_between))
            if done % cfg.log_every == 0 or done == stop or due:
                check_finite_loss(loss_sum, logged, done, cfg.out, saved)
                logged = done
            if done % cfg.log_every == 0 or done == stop:
                record = {"step": done, "loss": float(loss_sum) / window_steps,
                          "lr": optimizer.param_groups[0]["lr"],
                          "images_per_s": window_images / (now - t_window),
                          "data_wait_s": window_data_s / window_steps}
                meta["history"].append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}",
                                img_s=f"{record['images_per_s']:.1f}")
                loss_sum.zero_()
                window_steps, window_images, window_data_s, t_window = 0, 0, 0.0, now
            if rank == 0 and due:
                meta["train_seconds"] += time.perf_counter() - t_run
                save_checkpoint(cfg.out, model, optimizer, step=done, meta=meta)
                if snapshot:
                    save_snapshot(cfg.out)
                t_run = t_saved = time.perf_counter()
                saved = done
            t_asked = time.perf_counter()  # the next batch is asked for from here
            if ctrl_c.requested:
                bar.close()
                raise TrainingInterrupted(
                    f"interrupted at step {done} of {num_steps}; checkpoint saved in "
                    f"{Path(cfg.out) / MANIFEST}. Resume with the same command plus --resume "
                    f"(train --out {cfg.out} --resume ...)")
    bar.close()
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    meta.update(step=max(start, saved or 0), checkpoint=str(Path(cfg.out) / MANIFEST))
    return meta


def _resume(cfg: TrainConfig, model, optimizer, meta: dict) -> tuple[int, dict]:
    """Load model, optimizer and RNG states from `cfg.out`; check the settings still match."""
    ckpt = load_checkpoint(cfg.out, model_name=cfg.model, model_config=meta["model_config"],
                           with_optimizer=True)
    keys = [k for k in RESUME_KEYS if (k in ckpt.meta["train"] or k != "data_fingerprint")
            and not (cfg.extend and k == "num_steps")]
    # (older runs have no fingerprint, and no key added since: RESUME_DEFAULTS)
    stored = {k: ckpt.meta["train"].get(k, RESUME_DEFAULTS.get(k)) for k in keys}
    wanted = {k: meta["train"].get(k, RESUME_DEFAULTS.get(k)) for k in keys}
    diff = config_diff(stored, wanted)
    if diff:
        changed = (" (data_fingerprint: the dataset's file names or sizes changed)"
                   if any(d.startswith("data_fingerprint") for d in diff) else "")
        hint = ("; to continue on a longer schedule add --extend"
                if any(d.startswith("num_steps") for d in diff) else "")
        raise ValueError(f"cannot resume {cfg.out}: training settings differ{changed}: "
                         + "; ".join(diff) + hint)
    schedules = ckpt.meta["train"].get("schedules", [])
    if cfg.extend:
        new, done = meta["train"]["num_steps"], ckpt.step
        if new <= done:
            raise ValueError(f"--extend: the new schedule has {new} steps, not more than the "
                             f"{done} this run has done; give a larger --steps or --epochs")
        schedules = [*schedules, {k: ckpt.meta["train"].get(k)
                                  for k in ("num_steps", "lr_plan")} | {"until_step": done}]
    meta["train"]["schedules"] = schedules
    model.load_state_dict(ckpt.state)
    if ckpt.optimizer_state is None:
        raise ValueError(f"cannot resume {cfg.out}: the checkpoint has no optimizer state")
    optimizer.load_state_dict(ckpt.optimizer_state)
    set_rng_state(ckpt.meta["rng"])
    meta = {**meta, "history": ckpt.meta.get("history", []),
            "train_seconds": ckpt.meta.get("train_seconds", 0.0)}
    return ckpt.step, meta


def _fit_patchcore(model, dataset, batch_size: int, device, cfg: TrainConfig, meta: dict):
    """Fit PatchCore's memory bank on the training images and checkpoint it."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        num_workers=cfg.num_workers)
    t0 = time.perf_counter()
    batches = (b["image"].to(device) for b in tqdm(loader, desc="patchcore memory bank"))
    num_patches = model.fit(batches)
    meta["train_seconds"] = time.perf_counter() - t0
    meta["train"].update(num_steps=0, num_patches=num_patches,
                         memory_bank_size=int(model.memory_bank.shape[0]))
    meta.update(step=0, checkpoint=str(save_checkpoint(cfg.out, model, None, step=0, meta=meta)))
    return meta
