"""``binventory train``: fine-tune a counting model, on one process or under torchrun.

Laid out like torchvision's reference train.py: load_data, train_one_epoch, evaluate, main.
Every epoch ends with a checkpoint dict (model, optimizer, scheduler, EMA, epoch, RNG states,
config) written atomically, so ``--resume`` continues a killed run to the same result.
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from binventory import BinventoryError
from binventory.data.dataset import BinDataset
from binventory.data.preprocess import Preprocess
from binventory.data.provenance import summarize_training_data
from binventory.diagnostics.collect import Collector
from binventory.files import atomic_write
from binventory.model.artifact import save_artifact
from binventory.model.classes import CountClasses
from binventory.model.factory import (create_model, freeze_stages, normalization, set_train_mode,
                                      with_tta)
from binventory.model.losses import CountingLoss
from binventory.model.metrics import evaluate_logits as evaluate
from binventory.model.metrics import evaluate_many
from binventory.model.metrics import fit_temperature
from binventory.training import distill, distributed, init_from, priors
from binventory.training.augment import create_transform
from binventory.training.checkpoint import (load_checkpoint, rng_state, save_checkpoint,
                                            set_rng_state)
from binventory.training.config import TrainConfig
from binventory.training.manifests import read_training_data
from binventory.training.optim import build_optimizer, build_scheduler
from binventory.training.step import NonFiniteLoss, TrainStep

log = logging.getLogger(__name__)
EpochCallback = Callable[[int, dict], None]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_data(cfg: TrainConfig, info: distributed.DistInfo, preprocess: Preprocess):
    data = read_training_data(cfg.manifest)
    df, root = data.rows, data.root
    cache = cfg.cache_dir or None
    mean = preprocess.mean
    train_tf = create_transform(cfg.image_size, cfg.hflip, cfg.vflip, cfg.color, cfg.affine,
                                cfg.random_crop, fill=mean)
    classes = CountClasses(cfg.min_count, cfg.max_count, cfg.overflow)
    train_ds = BinDataset(df, "train", preprocess, train_tf, cache, root)
    if cfg.distill_from:
        train_ds = distill.with_teachers(train_ds, df, root, cfg, classes, info.device)
    val_ds = BinDataset(df, "val", preprocess, None, cache, root)
    test_ds = BinDataset(df, "test", preprocess, None, cache, root) if (df.split == "test").any() else None
    # One sampler for every case: with one replica it is a seeded shuffle, and set_epoch makes
    # each epoch's order depend only on (seed, epoch), which is what makes resume exact.
    sampler = DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=cfg.seed)
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler,
                              num_workers=cfg.workers, drop_last=len(train_ds) > cfg.batch_size,
                              pin_memory=info.device.type == "cuda")
    return (train_ds, val_ds, test_ds, train_loader, sampler, data.hash,
            priors.prior_log_ratio(df, classes))


def eval_loader(dataset: BinDataset, cfg: TrainConfig, info: distributed.DistInfo) -> DataLoader:
    # Each rank takes every world_size-th image; predictions are gathered, nothing is padded.
    shard = list(range(info.rank, len(dataset), info.world_size))
    return DataLoader(torch.utils.data.Subset(dataset, shard), batch_size=cfg.batch_size * 2,
                      num_workers=cfg.workers)


def build_step(cfg: TrainConfig, classes: CountClasses, device: torch.device,
               steps_per_epoch: int, class_weights: torch.Tensor | None = None,
               start: init_from.Start | None = None) -> TrainStep:
    """A run's model, EMA, optimizer, schedule and loss as its training step (train, profile);
    ``start``: the weights of the model it fine-tunes (before the EMA copies them)."""
    model = create_model(cfg.backbone, classes.num_classes, cfg.weights, cfg.dropout)
    if start is not None:
        model.load_state_dict(start.state_dict)
    if cfg.freeze:
        freeze_stages(model, cfg.freeze)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
           if cfg.ema_decay > 0 else None)
    optimizer = build_optimizer(model, cfg)
    loss = CountingLoss(cfg.loss, classes, cfg.label_smoothing, cfg.loss_weight, class_weights)
    if cfg.distill_from:
        loss = distill.DistillLoss(loss, cfg.distill_weight, cfg.distill_temperature)
    return TrainStep(model, loss.to(device), optimizer, classes.to_class, device,
                     scheduler=build_scheduler(optimizer, cfg, steps_per_epoch), ema=ema,
                     clip_grad=cfg.clip_grad, amp=cfg.amp, channels_last=cfg.channels_last)


def train_one_epoch(step: TrainStep, loader, cfg: TrainConfig, info: distributed.DistInfo,
                    epoch: int, diag: Collector | None = None) -> dict:
    set_train_mode(_unwrap(step.model))
    total_loss = correct = seen = 0
    start = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
               disable=None if cfg.progress and info.is_main else True)
    diag = diag or Collector(enabled=False)
    for images, counts, *soft in diag.batches(bar):  # soft: the teachers' targets, distilling
        try:
            loss, logits, targets = step(images, counts, diag, soft=soft[0] if soft else None)
        except NonFiniteLoss as e:
            raise BinventoryError(f"epoch {epoch + 1}: {e}") from None
        total_loss += loss.item() * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
    elapsed = time.perf_counter() - start
    return {"train_loss": total_loss / max(seen, 1), "train_accuracy": correct / max(seen, 1),
            "images_per_s": seen * info.world_size / max(elapsed, 1e-9),
            "lr": step.optimizer.param_groups[0]["lr"]}


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, info: distributed.DistInfo,
            channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and true counts of a whole (sharded) dataset, gathered on every rank."""
    model.eval()
    logits, counts = [], []
    for images, c in loader:
        images = images.to(info.device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits.append(model(images).float())
        counts.append(c.to(info.device))
    # A rank's shard can be empty (fewer images than ranks); it still joins the gather.
    out = torch.cat(logits) if logits else torch.zeros(0, model.binventory_spec.num_classes,
                                                        device=info.device)
    seen = torch.cat(counts) if counts else torch.zeros(0, dtype=torch.long, device=info.device)
    return distributed.all_gather_cat(out, info).cpu(), distributed.all_gather_cat(seen, info).cpu()


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def _log_epoch(record: dict, output: Path, writer) -> None:
    with open(output / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    if writer is not None:
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "epoch":
                writer.add_scalar(key, value, record["epoch"])


def _tensorboard(output: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional; JSONL metrics are always written
        return None
    return SummaryWriter(str(output / "tensorboard"))


def train(cfg: TrainConfig, callbacks: list[EpochCallback] | None = None,
          given: set[str] | None = None) -> dict:
    """Train, keep the best and last checkpoints, calibrate, evaluate and write model.pt.

    ``given``: the options the user set (the CLI knows them), which --init-from leaves alone;
    by default those that differ from TrainConfig's defaults."""
    cfg, start = init_from.resolve(cfg, given)
    info = distributed.setup(cfg.device)
    diag = Collector(cfg.diagnostics_every, cfg.stop_on_issue, enabled=info.is_main)
    try:
        return _train(cfg, info, callbacks or [], diag, start)
    finally:
        # In finally: a run that dies (a NaN loss, say) is the one whose report matters most.
        diag.close(cfg.output)
        distributed.cleanup()


def resume(cfg: TrainConfig, info: distributed.DistInfo, step: TrainStep,
           data_hash: str) -> tuple[int, dict | None, list[dict], int]:
    """Load OUTPUT/last.pt into the step when resuming: (start epoch, best, history, stale)."""
    output = Path(cfg.output)
    # Rank 0 reads last.pt and hands it to every rank: on several hosts (SageMaker) only rank
    # 0's disk has it, and ranks resuming at different epochs would wait on each other forever.
    ckpt = error = None
    if info.is_main and cfg.resume and (output / "last.pt").is_file():
        try:
            ckpt = load_checkpoint(output / "last.pt")
        except BinventoryError as e:
            error = str(e)
    ckpt, error = distributed.broadcast_object((ckpt, error), info)
    if error:
        raise BinventoryError(error)
    if ckpt is None:
        return 0, None, [], 0
    if ckpt["manifest_hash"] != data_hash:
        raise BinventoryError("the manifest changed since the checkpoint was written: "
                              "resume needs the same data")
    step.model.load_state_dict(ckpt["model"])
    step.optimizer.load_state_dict(ckpt["optimizer"])
    step.scheduler.load_state_dict(ckpt["scheduler"])
    if step.ema is not None:
        step.ema.load_state_dict(ckpt["ema"])
    history = ckpt["history"]
    set_rng_state(ckpt["rng"])
    if info.is_main:
        # The checkpoint is the record: a kill after it but before the epoch's metrics line
        # (or after the line but before the next checkpoint) must not lose or repeat a line.
        atomic_write(output / "metrics.jsonl",
                     lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in history)))
        log.info("resumed from %s at epoch %d", output / "last.pt", ckpt["epoch"] + 2)
    return ckpt["epoch"] + 1, ckpt["best"], history, ckpt["stale"]


def save_epoch(cfg: TrainConfig, step: TrainStep, best_scored: nn.Module | None, progress: dict,
               writer) -> None:
    """last.pt (and best.pt when the epoch improved), then the epoch's metrics line."""
    output, model = Path(cfg.output), _unwrap(step.model)
    state = {"model": model.state_dict(), "optimizer": step.optimizer.state_dict(),
             "scheduler": step.scheduler.state_dict(),
             "ema": step.ema.state_dict() if step.ema is not None else None,
             **progress, "rng": rng_state(), "config": cfg.to_dict(),
             "spec": model.binventory_spec.to_dict()}
    if best_scored is not None:
        save_checkpoint({**state, "scored": best_scored.state_dict()}, output / "best.pt")
    save_checkpoint(state, output / "last.pt")
    record = progress["history"][-1]
    _log_epoch(record, output, writer)
    log.info("epoch %d: loss %.3f, train acc %.3f, val acc %.3f, val rmse %.3f, %.1f img/s",
             record["epoch"], record["train_loss"], record["train_accuracy"],
             record["val_accuracy"], record["val_rmse"], record["images_per_s"])


def _train(cfg: TrainConfig, info: distributed.DistInfo, callbacks: list[EpochCallback],
           diag: Collector, start: init_from.Start | None = None) -> dict:
    output = Path(cfg.output)
    if cfg.epochs < (0 if start is not None else 1):
        raise BinventoryError(f"--epochs {cfg.epochs}: train at least one epoch (0 only with "
                              "--init-from, to recalibrate or add --tta without training)")
    if info.is_main:
        output.mkdir(parents=True, exist_ok=True)
        if not cfg.resume:
            (output / "metrics.jsonl").unlink(missing_ok=True)
    seed_everything(cfg.seed)
    classes = CountClasses(cfg.min_count, cfg.max_count, cfg.overflow)
    mean, std = normalization(cfg.backbone)
    preprocess = Preprocess(cfg.image_size, cfg.resize, mean, std)
    train_ds, val_ds, test_ds, train_loader, sampler, data_hash, log_ratio = load_data(cfg, info, preprocess)
    shift = priors.logit_shift(log_ratio, cfg.prior_correction)
    if info.is_main and log_ratio is not None:
        log.info("training prior differs from the recorded rows' prior: correcting with %s",
                 cfg.prior_correction)

    # Resuming, the checkpoint holds the weights: the parent's are not loaded again.
    resuming = cfg.resume and (output / "last.pt").is_file()
    step = build_step(cfg, classes, info.device, len(train_loader),
                      priors.loss_weights(log_ratio, cfg.prior_correction),
                      None if resuming else start)
    model, ema = step.model, step.ema
    diag.attach(model, step.optimizer, classes.to_class)

    start_epoch, best, history, stale = resume(cfg, info, step, data_hash)
    if info.enabled:
        model = step.model = DistributedDataParallel(model)
    writer = _tensorboard(output) if info.is_main else None
    val_loader = eval_loader(val_ds, cfg, info)
    if info.is_main:
        log.info("training %s on %d images (%d val) for %d epochs on %s x%d", cfg.backbone,
                 len(train_ds), len(val_ds), cfg.epochs, info.device, info.world_size)

    for epoch in range(start_epoch, cfg.epochs):
        # Everything random in an epoch follows from (seed, epoch): a resumed run repeats it.
        seed_everything(cfg.seed * 1000 + epoch)
        sampler.set_epoch(epoch)
        record = {"epoch": epoch + 1}
        record.update(train_one_epoch(step, train_loader, cfg, info, epoch, diag))
        scored = ema.module if ema is not None else _unwrap(model)
        logits, counts = predict(scored, val_loader, info, cfg.channels_last)
        val = evaluate(logits if shift is None else logits + shift, counts, classes)
        record.update({f"val_{k}": val[k] for k in ("accuracy", "rmse", "mae", "within1", "nll")})
        improved = best is None or (val["accuracy"], -val["rmse"]) > (best["val_accuracy"],
                                                                       -best["val_rmse"])
        stale = 0 if improved else stale + 1
        if improved:
            best = dict(record)
        history.append(record)
        if info.is_main:
            save_epoch(cfg, step, scored if improved else None,
                       {"epoch": epoch, "best": best, "history": history, "stale": stale,
                        "manifest_hash": data_hash}, writer)
        for callback in callbacks:
            callback(epoch, record)
        diag.end_epoch(record)
        if diag.should_stop(info.device):
            log.warning("stopped after epoch %d: --stop-on-issue %s", epoch + 1,
                        " ".join(diag.stopped_by))
            break
        if cfg.patience and stale >= cfg.patience:
            if info.is_main:
                log.info("early stop: no improvement for %d epochs", stale)
            break
    if writer is not None:
        writer.close()
    return finish(cfg, info, classes, preprocess, val_ds, test_ds, data_hash, history,
                  distributed.weight_checksums(_unwrap(model), info), shift,
                  start, train_ds.teacher_ids if cfg.distill_from else [])


def best_weights(output: Path, history: list[dict],
                 start: init_from.Start | None) -> tuple[dict, int]:
    """The best epoch's weights and its number; with no epoch trained (``--init-from MODEL
    --epochs 0``: recalibrate, correct or add TTA on new data) the parent's, epoch 0."""
    if not history and start is not None:
        return start.state_dict, 0
    ckpt = load_checkpoint(output / "best.pt")
    state = {k.removeprefix("module."): v for k, v in ckpt["scored"].items() if k != "n_averaged"}
    return state, ckpt["best"]["epoch"]


def finish(cfg, info, classes, preprocess, val_ds, test_ds, data_hash, history,
           checksums, shift: torch.Tensor | None = None,
           start: init_from.Start | None = None, teachers: list[str] | None = None) -> dict:
    """Best weights (+ the prior correction, in the head) -> temperature fitted on val -> test
    metrics per protocol -> model.pt."""
    from binventory.data.split import PROTOCOLS

    output = Path(cfg.output)
    world_size = info.world_size
    if info.enabled:
        torch.distributed.barrier()
        if not info.is_main:
            return {"metrics": {}, "output": str(output), "history": history}
        # Rank 0 finishes alone: on a multi-node job the other hosts may not see its best.pt.
        info = distributed.DistInfo(device=info.device)
    state, best_epoch = best_weights(output, history, start)
    model = create_model(cfg.backbone, classes.num_classes, "none", cfg.dropout).to(info.device)
    model.load_state_dict(state)
    if cfg.tta:  # before anything is fitted on val: correction and temperature see TTA logits
        model = with_tta(model)
    fraction, raw = 1.0, None
    if shift is not None and cfg.prior_correction == "tempered":
        raw, counts = predict(model, eval_loader(val_ds, cfg, info), info)
        fraction = priors.best_fraction(raw, classes.to_class(counts), shift)
        shift = shift * fraction
    if shift is not None:
        priors.fold_into_head(model, shift)
    # The folded head adds the shift to every logit: no second pass over val for it.
    logits, counts = (raw + shift, counts) if raw is not None else predict(
        model, eval_loader(val_ds, cfg, info), info)
    temperature = fit_temperature(logits, classes.to_class(counts))
    metrics = {"val": evaluate(logits, counts, classes, temperature),
               "temperature": temperature, "best_epoch": best_epoch,
               "world_size": world_size, "rank_weight_checksums": checksums,
               "prior_correction": cfg.prior_correction if shift is not None else "none",
               "prior_shift": None if shift is None else shift.tolist(),
               "prior_fraction": None if shift is None else fraction,
               "teachers": teachers or []}
    protocols = [name for name in cfg.eval_protocols.split(",") if name]
    # The val split per protocol too: heads with different classes compare on these.
    metrics["val_protocols"] = {name: evaluate(logits, counts, classes, temperature, PROTOCOLS[name])
                                for name in protocols}
    if shift is not None:  # what the correction bought, for the ablation table
        raw = logits - shift
        t_raw = fit_temperature(raw, classes.to_class(counts))
        metrics["val_without_correction"] = {
            "all": evaluate(raw, counts, classes, t_raw),
            **{name: evaluate(raw, counts, classes, t_raw, PROTOCOLS[name])
               for name in protocols}}
    if test_ds is not None:
        test_logits, test_counts = predict(model, eval_loader(test_ds, cfg, info), info)
        metrics["test"] = {"all": evaluate(test_logits, test_counts, classes, temperature)}
        for name in protocols:
            metrics["test"][name] = evaluate(test_logits, test_counts, classes, temperature,
                                             PROTOCOLS[name])
        many = evaluate_many(test_logits, test_counts, classes, temperature)
        if many is not None:
            metrics["test"]["6-15"] = many
        np.savez_compressed(output / "test_predictions.npz", logits=test_logits.numpy(),
                            counts=test_counts.numpy())
    data = read_training_data(cfg.manifest)
    metrics["training_data"] = summarize_training_data(data.rows, data.root)
    save_artifact(output / "model.pt", model, classes=classes, preprocess=preprocess,
                  temperature=temperature, metrics=metrics, train_config=cfg.to_dict(),
                  manifest_hash=data_hash, name=f"{cfg.backbone}-{data_hash[:8]}",
                  parent=start.parent if start is not None else "", data=data.sources)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return {"metrics": metrics, "output": str(output), "history": history,
            "model": str(output / "model.pt")}
