"""One training loop for every model family (:mod:`detviz.engine.families`).

``train(TrainConfig(model="gfl"))`` (or ``train(config, family=...)`` with a
:class:`~detviz.engine.families.Family` of your own) runs in named phases: :func:`_setup`
(data, model, optimizer), :func:`_resume` (a checkpoint's state), then for each step
:func:`_step`, :func:`_evaluate` and :func:`_save` as their turns come. Each step is:

1. the step's images (:mod:`detviz.engine.batches`: fixed by the seed and the step number),
   each warped to ``input_size`` x ``input_size`` by :class:`detviz.datasets.augment.NanoDetWarp`
   (random scale in ``warp_scale``, flip and shift up to ``warp_translate``; boxes follow), built by
   ``workers`` DataLoader processes;
2. the family's losses, summed; a NaN or Inf (in a term, or in boxes inside the loss) stops the run
   with ``OUT/nonfinite.txt`` (:mod:`detviz.engine.nonfinite`: the step, the terms, the first
   non-finite tensor by its trace name, the batch), keeping the last checkpoint as it was;
3. backward, gradient-norm clipping at 35 (NanoDet's), an SGD or AdamW step at the rate of
   :func:`detviz.engine.optim.learning_rate` (warm-up, then cosine), and the EMA update;
4. a row of ``OUT/log.csv`` (step, rate, losses); every ``eval_every`` steps (and at the end)
   the COCO metrics of the EMA weights on ``val_data``, appended to ``OUT/metrics.json``;
   every ``checkpoint_every`` steps and at the end ``OUT/checkpoint.pt``, written atomically,
   and at the end ``OUT/model.pt``, the EMA weights alone for inference.

Resuming restores the weights, the optimizer, the EMA, the step and the global random state;
the data needs nothing more, so a run stopped and resumed gives the same weights as one
that never stopped (not so with ``time_budget``, whose schedule follows the clock).

Devices: CPU by default; on CUDA the forward pass runs under float16 autocast with a
gradient scaler (``amp``) and the model and images are channels-last (``channels_last``).
``amp=True`` on the CPU runs the forward pass under bfloat16 autocast (no scaler: bfloat16 has
float32's range); the losses are computed in float32 either way.
Under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in DistributedDataParallel
(NCCL on CUDA, gloo on CPU), each process takes its share of every global batch, and only
rank 0 writes logs, metrics and checkpoints.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from detviz.datasets.augment import NanoDetWarp
from detviz.datasets.coco import CocoDetection, open_dataset
from detviz.engine.batches import AugmentedSamples, StepBatches, collate_square, derived_seed
from detviz.engine.checkpoints import (CHECKPOINT_FORMAT, CHECKPOINT_NAME, MODEL_NAME, build_model_from_checkpoint,
                                       load_checkpoint, save_atomic)
from detviz.engine.config import (DEFAULT_LR, OVERFIT_NAME, TrainConfig, check_config, check_out, check_resume,
                                  check_val_data, overfit_config, synthetic_train_dir, write_overfit_batch)
from detviz.engine.families import Family, get_family
from detviz.engine.inference import dumps_metrics, evaluate_checkpoint, evaluate_model, finite_metrics, predict_dataset
from detviz.engine.logs import LOG_NAME, METRICS_NAME, StepLog, metrics_history, write_metrics
from detviz.engine.nonfinite import NONFINITE_NAME, NonFiniteError, diagnose, is_nonfinite_error, write_report
from detviz.engine.optim import ModelEMA, learning_rate
from detviz.engine.processes import Processes, training_device

# the checkpoint and evaluation helpers a training script needs come with it
__all__ = ["TrainConfig", "train", "synthetic_train_dir", "DEFAULT_LR", "LOG_NAME", "METRICS_NAME",
           "load_checkpoint", "build_model_from_checkpoint", "open_dataset", "predict_dataset", "evaluate_model",
           "evaluate_checkpoint", "finite_metrics", "dumps_metrics", "CHECKPOINT_NAME", "MODEL_NAME"]

GRAD_CLIP = 35.0  # NanoDet's grad_clip


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    lr = config.lr if config.lr is not None else DEFAULT_LR[config.optimizer]
    # no weight decay on BatchNorm weights and on biases (1-d tensors), as is usual for detectors
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=lr)


def _progress_bar(config: TrainConfig, start: int):
    """tqdm.auto's bar (a widget in Jupyter, text in a terminal), or None when unwanted."""
    if not config.progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=config.steps, initial=start, desc=f"train {config.model}", dynamic_ncols=True)


@dataclass
class _Run:
    """What the phases of one run share."""

    config: TrainConfig
    family: Family
    device: torch.device
    world: Processes
    out: Path
    dataset: object  # CocoDetection
    val_dataset: object | None
    module: nn.Module  # the bare model
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp: bool
    channels_last: bool
    model: nn.Module | None = None  # what the forward pass calls: module, or its DDP wrapper
    ema: ModelEMA | None = None
    step: int = 0
    elapsed_before: float = 0.0  # training seconds of the run before a resume
    train_seconds: float = 0.0  # training seconds of this process, evaluations left out
    metrics: list = field(default_factory=list)
    losses: list = field(default_factory=list)  # one dict per step run now
    images: int = 0  # images trained on now, all processes
    observers: tuple = ()  # told what happens (train's ``observers``), on the main process
    batch_ids: list = field(default_factory=list)  # image ids of this process's current batch
    saved_step: int | None = None  # step of the last checkpoint.pt this run wrote

    @property
    def num_classes(self) -> int:
        return len(self.dataset.label_to_category_id)

    @property
    def scored(self) -> nn.Module:
        """The weights that are evaluated and shipped: the EMA's when the run keeps one."""
        return self.ema.module if self.ema else self.module


def train(config: TrainConfig, family: Family | None = None, observers: Sequence = ()) -> dict:
    """Train ``config.model`` for ``config.steps`` steps in total (a resumed run continues its count).

    Args:
        config: the run's settings.
        family: the model family to train; None takes the built-in one named ``config.model``.
            A family of your own must carry that name (``TrainConfig(model=family.name)``).
        observers: objects told what happens, on the main process, through whichever of these
            methods they have: ``on_start(dataset)`` once the run is set up,
            ``on_batch(step, images [B, 3, S, S], boxes, labels, image_ids)`` before each step
            (``step`` counts from 0 over the whole run, a resume included), ``on_evaluation()``
            after each evaluation and at the end, with ``log.csv`` and ``metrics.json`` written,
            and ``on_nonfinite(step, images, boxes, labels, image_ids)`` when a step meets a NaN. E.g.
            :class:`detviz.viz.training.TrainingPictures`, which the ``train`` command passes.

    Returns:
        A dict: ``step`` (int), ``losses`` (``[{name: float}]``, one per step run now), ``metrics``
        (``[{step, mAP, ...}]``), ``checkpoint``, ``model`` and ``log`` (Paths), ``seconds``,
        ``images_per_second``, ``module`` (the trained model), ``ema_module`` (its average or
        None), ``reached_ap50`` (whether the run stopped because an evaluation reached
        ``stop_at_ap50``).

    Raises:
        ValueError: bad settings, or ``resume`` names a checkpoint of another model family
            or class count.
        NonFiniteError (a FloatingPointError): a loss term, or a box inside the loss, became NaN or
            Inf; ``OUT/nonfinite.txt`` says where.
        OSError: an image could not be read (the message names the file).
    """
    if family is None:
        family = get_family(config.model)
    elif not isinstance(family, Family) or family.name != config.model:
        raise ValueError(f"family must be a Family named like config.model ({config.model!r}), got {family!r}")
    check_config(config, family)
    config = overfit_config(config)
    device = training_device(config.device)
    world = Processes(device)
    try:
        return _train(_setup(config, family, device, world), tuple(observers))
    finally:
        world.close()


def _setup(config: TrainConfig, family: Family, device: torch.device, world: Processes) -> _Run:
    """Phase 1: the output folder, the datasets, the model (same initial weights in every process),
    the optimizer and the gradient scaler."""
    out = Path(config.out)
    check_out(config)
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        if not config.data:
            synthetic_train_dir(config)  # generated once, by one process
    world.barrier()
    dataset = open_dataset(config.data if config.data else synthetic_train_dir(config))
    val_dataset = open_dataset(config.val_data) if config.val_data else None
    if val_dataset is not None:
        check_val_data(val_dataset, config.val_data)
    if config.overfit_batch:  # the batch, written by rank 0, is the training and the validation data
        if world.main:
            write_overfit_batch(dataset, config.overfit_batch, out)
        world.barrier()
        dataset = val_dataset = CocoDetection(dataset.image_dir, out / OVERFIT_NAME)
    if val_dataset is not None and val_dataset.label_to_category_id != dataset.label_to_category_id:
        raise ValueError(f"val_data {config.val_data} has the categories {val_dataset.label_to_category_id}, the "
                         f"training data {dataset.label_to_category_id} (label: category id)")
    amp = device.type == "cuda" if config.amp is None else config.amp
    channels_last = device.type == "cuda" if config.channels_last is None else config.channels_last

    torch.manual_seed(config.seed)  # the same initial weights in every process
    module = family.build(len(dataset.label_to_category_id), config.input_size).to(device)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    if world.world_size > 1:  # but each process its own draws (e.g. the R-CNN samplers)
        torch.manual_seed(derived_seed(config.seed, 2, world.rank))
    return _Run(config, family, device, world, out, dataset, val_dataset, module, _optimizer(config, module),
                torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda"), amp, channels_last)


def _resume(run: _Run) -> None:
    """Phase 2: the weights, optimizer, scaler, step, clock and random state of ``config.resume``,
    then the EMA (restored too) and the DDP wrapper."""
    config, checkpoint = run.config, None
    if config.resume:
        checkpoint = load_checkpoint(config.resume, model_family=config.model, num_classes=run.num_classes,
                                     for_resume=True)
        check_resume(config, checkpoint, run.world.world_size)
        run.module.load_state_dict(checkpoint["model"])
        run.optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint["scaler"] and run.amp:  # a run without AMP saved an empty scaler state
            run.scaler.load_state_dict(checkpoint["scaler"])
        run.step, run.elapsed_before = checkpoint["step"], checkpoint.get("seconds", 0.0)
        # exact for one process; under DDP every process restores rank 0's state
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if run.device.type == "cuda" and checkpoint["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], run.device)
    run.ema = ModelEMA(run.module, config.ema_decay, config.ema_ramp) if config.ema_decay else None
    if run.ema is not None and checkpoint is not None and checkpoint.get("ema"):
        run.ema.load_state_dict(checkpoint["ema"])
    run.model = run.module
    if run.world.world_size > 1:
        device_ids = [run.device.index] if run.device.type == "cuda" else None
        run.model = nn.parallel.DistributedDataParallel(run.module, device_ids=device_ids)
    if run.world.main:
        run.metrics = metrics_history(run.out / METRICS_NAME, run.step)


def _loader(run: _Run) -> DataLoader:
    """The batches of the steps still to run, fixed by (seed, step) whatever the number of workers."""
    config, world = run.config, run.world
    size = (config.input_size, config.input_size)
    # overfit_batch: no augmentation, the plain resize that evaluation uses
    warp = (NanoDetWarp(size, scale=(1.0, 1.0), translate=0.0, flip=0.0) if config.overfit_batch else
            NanoDetWarp(size, scale=tuple(config.warp_scale), translate=config.warp_translate))
    batches = StepBatches(len(run.dataset), config.batch_size, config.seed, run.step, config.steps, rank=world.rank,
                          world_size=world.world_size)
    return DataLoader(AugmentedSamples(run.dataset, warp, config.seed), batch_sampler=batches,
                      num_workers=config.workers, collate_fn=collate_square, pin_memory=run.device.type == "cuda",
                      generator=torch.Generator().manual_seed(config.seed))  # leaves the global RNG alone


def _step(run: _Run, images, boxes, labels, lr: float) -> dict:
    """Phase 3, once per batch: losses, backward, clipping, the optimizer and EMA updates.
    Returns the step's losses (``loss`` = their sum) averaged over the processes."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    images = images.to(run.device, non_blocking=True)
    if run.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    boxes = [b.to(run.device) for b in boxes]
    labels = [lab.to(run.device) for lab in labels]
    try:
        loss_dict = run.family.loss(run.model, run.module, images, boxes, labels, run.amp)
    except (ValueError, RuntimeError) as err:
        if "more than 1 value per channel" in str(err):  # BatchNorm in train mode on a single value
            raise ValueError(f"step {run.step + 1}: a BatchNorm layer saw one value per channel (batch_size "
                             f"{images.shape[0]} per process at input_size {run.config.input_size}: the coarsest "
                             "feature map is 1 x 1); train with batch_size >= 2 or a larger input_size") from err
        if not is_nonfinite_error(err):
            raise
        _stop_nonfinite(run, (images, boxes, labels), lr, {}, f"values inside the loss ({err})")
    loss = sum(loss_dict.values())
    if run.world.any(not bool(torch.isfinite(loss))):  # every process stops, none waits in backward
        terms = {k: float(v.detach()) for k, v in loss_dict.items()}
        bad = next((k for k, v in terms.items() if not math.isfinite(v)), "loss")
        _stop_nonfinite(run, (images, boxes, labels), lr, terms,
                        f"loss term {bad} = {terms.get(bad, float(loss.detach()))}")
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(run.module.parameters(), GRAD_CLIP)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.ema is not None:
        run.ema.update(run.module)
    run.step += 1
    run.images += images.shape[0] * run.world.world_size
    values = run.world.mean(torch.stack([loss.detach(), *(v.detach() for v in loss_dict.values())]).float())
    return dict(zip(["loss", *loss_dict], values.tolist()))


def _stop_nonfinite(run: _Run, batch: tuple, lr: float, terms: dict, term: str):
    """Write ``OUT/nonfinite.txt`` (and let the observers draw the batch), then raise NonFiniteError."""
    images, boxes, labels = batch
    path = run.out / NONFINITE_NAME
    if run.world.main:
        diagnosis = diagnose(run.family, run.model, run.module, images, boxes, labels, step=run.step + 1, lr=lr,
                             losses=terms, term=term, amp=run.amp, image_ids=run.batch_ids)
        checkpoint = run.out / CHECKPOINT_NAME
        kept = (f"{checkpoint} (step {run.saved_step})" if run.saved_step is not None else
                f"{checkpoint} (written before this run)" if checkpoint.is_file() else
                "none: no checkpoint was written before this step")
        write_report(diagnosis, path, run.dataset.class_names, kept)
        try:
            _notify(run, "on_nonfinite", run.step, images.cpu(), [b.cpu() for b in boxes], [x.cpu() for x in labels],
                    run.batch_ids)
        except Exception as err:  # a picture that fails must not hide why training stopped
            raise NonFiniteError(f"{diagnosis.message(path)} (drawing the batch failed: {err})") from err
        raise NonFiniteError(diagnosis.message(path))
    raise NonFiniteError(f"step {run.step + 1}: non-finite {term} (rank {run.world.rank}); see {path}")


def _evaluate(run: _Run, bar) -> None:
    """Phase 4: COCO metrics of the scored weights on ``val_data``, appended to ``metrics.json``
    (rank 0 only; the others wait at the next barrier)."""
    if run.val_dataset is None or not run.world.main:
        return
    scored = run.scored
    was_training = scored.training
    scored.eval()
    result = evaluate_model(run.family, scored, run.val_dataset, run.config.input_size)
    scored.train(was_training)
    run.metrics.append({"step": run.step, **finite_metrics(result)})
    write_metrics(run.out / METRICS_NAME, run.metrics)
    if bar is not None:
        loss = f"loss {run.losses[-1]['loss']:.4f} " if run.losses else ""
        on = "the batch" if run.config.overfit_batch else "val"
        bar.write(f"step {run.step}: {loss}mAP {result['mAP']:.4f} AP50 {result['AP50']:.4f} on {on}")


def _checkpoint(run: _Run, full: bool) -> dict:
    """Phase 5's content: everything ``--resume`` needs (``full``), or the scored weights alone."""
    config = run.config
    state = {"format": CHECKPOINT_FORMAT, "model_family": config.model, "num_classes": run.num_classes,
             "model_config": run.family.model_config(run.module), "train_config": asdict(config),
             "label_to_category_id": dict(run.dataset.label_to_category_id),
             "class_names": dict(run.dataset.class_names), "step": run.step,
             "seconds": run.elapsed_before + run.train_seconds,  # training time, evaluations left out
             "world_size": run.world.world_size}
    if not full:
        return {**state, "model": run.scored.state_dict()}
    cuda = run.device.type == "cuda"
    return {**state, "model": run.module.state_dict(), "ema": run.ema.state_dict() if run.ema else None,
            "optimizer": run.optimizer.state_dict(), "scaler": run.scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(run.device) if cuda else None}}


def _save(run: _Run, final: bool) -> None:
    """Phase 5: ``checkpoint.pt`` (and at the end ``model.pt``), written atomically by rank 0."""
    if run.world.main:
        save_atomic(_checkpoint(run, full=True), run.out / CHECKPOINT_NAME)
        run.saved_step = run.step
        if final:
            save_atomic(_checkpoint(run, full=False), run.out / MODEL_NAME)


def _reached(run: _Run) -> bool:
    """Whether the last evaluation reached ``stop_at_ap50`` (rank 0 decides for every process)."""
    target = run.config.stop_at_ap50
    reached = target is not None and bool(run.metrics) and (run.metrics[-1].get("AP50") or 0.0) >= target
    return bool(run.world.from_main(float(reached)))


def _progress(run: _Run, start_time: float, eval_seconds: float) -> float | None:
    """The fraction of the run done, by steps or by the clock; None once the time budget is spent."""
    config = run.config
    if config.time_budget is None:
        return run.step / config.steps
    elapsed = time.perf_counter() - start_time - eval_seconds
    progress = run.world.from_main((run.elapsed_before + elapsed) / config.time_budget)
    return None if progress >= 1.0 else progress


def _notify(run: _Run, event: str, *args) -> None:
    """Call ``observer.<event>(*args)`` on the main process for each observer that has it."""
    if run.world.main:
        for observer in run.observers:
            method = getattr(observer, event, None)
            if method is not None:
                method(*args)


def _train(run: _Run, observers: tuple = ()) -> dict:
    """The loop: resume, then step, evaluate and save in turn; a last evaluation and save at the end."""
    _resume(run)
    run.observers = observers
    _notify(run, "on_start", run.dataset)
    config, world = run.config, run.world
    base_lr = config.lr if config.lr is not None else DEFAULT_LR[config.optimizer]
    log = StepLog(run.out / LOG_NAME, run.step) if world.main else None
    bar = _progress_bar(config, run.step) if world.main else None
    start_time, eval_seconds = time.perf_counter(), 0.0
    run.module.train()
    try:
        loader = _loader(run)
        for images, boxes, labels in loader:
            progress = _progress(run, start_time, eval_seconds)
            if progress is None:
                break
            lr = learning_rate(base_lr, run.step, progress, warmup_steps=config.warmup_steps,
                               schedule=config.schedule, min_ratio=config.min_lr_ratio)
            indices = loader.batch_sampler.global_batch(run.step)[world.rank::world.world_size]
            run.batch_ids = [run.dataset.image_ids[i] for i in indices]
            _notify(run, "on_batch", run.step, images, boxes, labels, run.batch_ids)
            row = _step(run, images, boxes, labels, lr)
            run.losses.append(row)
            if world.main:
                log.write({"step": run.step, "lr": lr, **row})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}")
            run.train_seconds = time.perf_counter() - start_time - eval_seconds
            evaluating = bool(config.eval_every) and run.step % config.eval_every == 0 and run.step < config.steps
            saving = bool(config.checkpoint_every) and run.step % config.checkpoint_every == 0
            if evaluating:
                eval_start = time.perf_counter()
                _evaluate(run, bar)
                _notify(run, "on_evaluation")
                eval_seconds += time.perf_counter() - eval_start
                if _reached(run):
                    break
            if saving:
                _save(run, final=False)
            if evaluating or saving:  # the other processes wait for rank 0
                world.barrier()
        if not run.metrics or run.metrics[-1]["step"] != run.step:
            _evaluate(run, bar)
        _save(run, final=True)
        _notify(run, "on_evaluation")
        world.barrier()
    finally:
        if log is not None:
            log.close()
        if bar is not None:
            bar.close()
    seconds = run.train_seconds
    return {"step": run.step, "losses": run.losses, "metrics": run.metrics, "checkpoint": run.out / CHECKPOINT_NAME,
            "model": run.out / MODEL_NAME, "log": run.out / LOG_NAME, "seconds": seconds,
            "images_per_second": run.images / seconds if seconds > 0 else math.nan,
            "module": run.module, "ema_module": run.ema.module if run.ema else None,
            "reached_ap50": config.stop_at_ap50 is not None and bool(run.metrics)
            and (run.metrics[-1].get("AP50") or 0.0) >= config.stop_at_ap50}
