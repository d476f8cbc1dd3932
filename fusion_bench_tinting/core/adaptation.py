"""The test-time adaptation loop (family-agnostic; docs/algorithm.md): Adam over the coefficients and every
task's tinted layer, each iteration one step per task in a fresh random order (gradients set to None first, so
Adam leaves the other tasks' tinted layers alone). Inputs and teacher outputs are precomputed. Each step reads the
host once: Model Tinting++ must not step on a batch it emptied, and no step may use a NaN loss (the plugin's loop
checks both on the device). Data parallelism goes through ``data_parallel`` (one process here)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Dict, List, Mapping, Optional

import torch
from torch import Tensor

from .console import progress
from .data import EpochSampler
from .fabric_glue import SingleProcess, seconds_since
from .losses import confidence_filter, per_sample_loss, warn_about_filtered_regression
from .merging import LayerWiseMerger
from .optimizer import gradients_finite, make_optimizer, non_finite_error
from .run_state import AdaptationStats, TaskState

EncodeFn = Callable[[Mapping[str, Tensor], Tensor], Tensor]


@dataclass
class AdaptationOptions:
    max_steps: int
    lr: float
    batch_size: int
    loss: str = "ce"
    confidence_filter: bool = False
    train_coefficients: bool = True
    train_tinted_layer: bool = True
    #: iterations between logged loss and coefficient figures
    log_every: int = 10


class TintingTrainer:
    def __init__(
        self,
        merger: LayerWiseMerger,
        encode: EncodeFn,
        tasks: List[TaskState],
        options: AdaptationOptions,
        *,
        device: torch.device,
        generator: torch.Generator,
        input_dtype: Optional[torch.dtype] = None,
        autocast: Callable[[], ContextManager] = contextlib.nullcontext,
        log_metrics: Optional[Callable[[Dict[str, float], int], None]] = None,
        data_parallel: Optional[Any] = None,
        section: Callable[[str], ContextManager] = lambda name: contextlib.nullcontext(),
        fused_optimizer: Optional[bool] = None,
        grad_scaler: Optional[torch.amp.GradScaler] = None,
    ):
        self.merger = merger
        self.encode = encode
        self.tasks = tasks
        self.options = options
        self.device = device
        self.generator = generator
        self.input_dtype = input_dtype
        self.autocast = autocast
        self.log_metrics = log_metrics
        self.data_parallel = data_parallel or SingleProcess()
        #: times the parts of a step (data, merge, forward, backward, optimizer) when profiling
        self.section = section
        self.samplers = [EpochSampler(len(t.inputs), options.batch_size, generator) for t in tasks]
        self._reset_counters()
        self.fused = device.type == "cuda" if fused_optimizer is None else fused_optimizer
        self.optimizer, self._trained = make_optimizer(merger, tasks, options, self.fused)
        #: fp16 autocast (``fabric.precision=16-mixed``): losses are scaled so that small gradients do not
        #: underflow in fp16; a step whose gradients overflow is skipped (Fabric's own GradScaler)
        self.scaler = grad_scaler
        #: steps cancelled on the device (fp16 overflows) not yet counted
        self.cancelled = torch.zeros((), dtype=torch.long, device=device)
        self._fixed_merge: Optional[Dict[str, Tensor]] = None
        #: what merges at each step (a subclass may compile it)
        self._merge: Callable[[], Dict[str, Tensor]] = merger
        if options.confidence_filter:
            warn_about_filtered_regression([t.name for t in tasks if t.is_regression])

    def _reset_counters(self) -> None:
        """Where the loop is and what it has counted (the plugin's checkpoints save all of it)."""
        device, tasks = self.device, self.tasks
        self._kept = [torch.zeros((), dtype=torch.long, device=device) for _ in tasks]
        self._seen = [0 for _ in tasks]
        self._last_loss = [torch.zeros((), device=device) for _ in tasks]
        # the loss of the window's steps and how many were made (device tensors, read once per window)
        self._window_loss, self._window_steps = torch.zeros((), device=device), torch.zeros((), device=device)
        # where the loop is: iteration, its task order and the next position in it
        self.iteration, self.order, self.position = 0, None, 0
        self.visits = self.steps = self.skipped = 0
        self.seconds = 0.0

    # ----- pieces of a step --------------------------------------------------------------------
    def merged(self) -> Optional[Dict[str, Tensor]]:
        """The merged tensors (None: the encoder merges inside itself, as a compiled step may)."""
        if self.options.train_coefficients:
            return self._merge()
        if self._fixed_merge is None:  # coefficients frozen: merge once
            with torch.no_grad():
                self._fixed_merge = {k: v.detach() for k, v in self.merger().items()}
        return self._fixed_merge

    def student_logits(self, task: TaskState, merged: Optional[Mapping[str, Tensor]], inputs: Tensor) -> Tensor:
        own = task.own_tensors()
        params = {**merged, **own} if own else merged
        return task.head(self.encode(params, inputs))

    def task_loss(self, index: int, merged: Optional[Mapping[str, Tensor]]) -> Optional[Tensor]:
        """Loss of one batch of task ``index`` (None when the ++ filter dropped every sample)."""
        task = self.tasks[index]
        global_batch = self.samplers[index].next()
        batch = self.data_parallel.local(global_batch)
        with self.section("data"):
            inputs = task.inputs.gather(batch, self.device, self.input_dtype)
            teacher = task.teacher.index_select(0, batch.to(self.device, non_blocking=True))
        with self.section("forward"), self.autocast():
            logits = self.student_logits(task, merged, inputs)
            losses = per_sample_loss(task.objective or self.options.loss, logits, teacher)
        outputs = global_batch.numel() * task.outputs_per_sample  # counted per position for a dense prediction
        self._seen[index] += outputs
        if self.options.confidence_filter and not task.is_regression:
            keep = confidence_filter(logits, teacher)
            kept = self.data_parallel.all_reduce_sum(keep.sum())
            self._kept[index] += kept
            return self._filtered_loss(index, losses * keep, kept)
        self._kept[index] += outputs
        loss = (losses.flatten(1).mean(1) if losses.ndim > 1 else losses).sum() / global_batch.numel()
        # the logged loss is this process's share; summed over processes it is the global batch's
        self._last_loss[index] = loss.detach()
        return loss

    def _filtered_loss(self, index: int, kept_losses: Tensor, kept: Tensor) -> Optional[Tensor]:
        """The ++ loss, over the samples the filter kept; None (no step) when it kept none (a host read)."""
        if not bool(kept > 0):
            return None
        loss = kept_losses.sum() / kept
        self._last_loss[index] = loss.detach()
        return loss

    # ----- loop --------------------------------------------------------------------------------
    def _begin_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def _sequential_step(self, index: int) -> None:
        self._begin_step()
        with self.section("merge"):
            merged = self.merged()
        loss = self.task_loss(index, merged)
        if loss is None:
            self.skipped += 1
            return
        cancelled = self._backward_and_step(loss, self._cancel_flag(loss, index))
        self.steps += 1
        self._window_loss += loss.detach()  # zero for an empty batch
        self._window_steps += 1 if cancelled is None else ~cancelled
        if cancelled is not None:
            self.cancelled += cancelled

    def _non_finite(self, loss: Tensor) -> Tensor:
        """A device flag: the loss is NaN or infinite (in any data-parallel process: all stop at the same step)."""
        return self.data_parallel.all_reduce_sum((~torch.isfinite(loss.detach())).float()) > 0

    def _cancel_flag(self, loss: Tensor, index: int) -> Optional[Tensor]:
        """Stop on a NaN or infinite loss before it reaches a parameter (a host read; under fp16 loss scaling the
        scaler skips such steps instead). Returns the device flag of a step to cancel: None, the step is made."""
        if self.scaler is None and bool(self._non_finite(loss)):
            raise non_finite_error(self.tasks[index].name, self.visits, len(self.tasks))
        return None

    def _backward_and_step(self, loss: Tensor, cancel: Optional[Tensor]) -> Optional[Tensor]:
        """Backward, gradients summed over processes, optimizer step (see :meth:`_step`)."""
        with self.section("backward"):
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            self.data_parallel.sum_gradients(self._trained)
        with self.section("optimizer"):
            return self._step(cancel)

    def _step(self, cancel: Optional[Tensor]) -> Optional[Tensor]:
        """The optimizer step. Returns a device flag that is true when the step was cancelled (fp16 gradients
        that overflowed, or ``cancel``: a subclass's), or None when it was certainly made."""
        if self.scaler is None:
            return self._step_unless(cancel)
        self.scaler.unscale_(self.optimizer)
        overflow = ~gradients_finite(self._trained, self.device)
        cancelled = self._step_unless(overflow if cancel is None else overflow | cancel)
        self.scaler.update()
        return cancelled

    def _step_unless(self, cancel: Optional[Tensor]) -> Optional[Tensor]:
        """The optimizer step unless the device flag ``cancel`` is true (a host read: only the fused kernel can
        cancel a step on the device). Returns ``cancel``."""
        if cancel is None or not bool(cancel):
            self.optimizer.step()
        return cancel

    def _settle_empty_steps(self) -> None:
        """Count the steps cancelled on the device as skipped (one host read)."""
        cancelled = int(self.cancelled)
        if cancelled:
            self.cancelled.zero_()
            self.steps -= cancelled
            self.skipped += cancelled

    def _log_window(self, iteration: int, progress) -> None:
        self._settle_empty_steps()
        count = float(self._window_steps)
        if count:
            # one all-reduce: the window's loss and each task's latest loss (each process holds its share)
            losses = self.data_parallel.all_reduce_sum(
                torch.stack([self._window_loss, *(loss.float() for loss in self._last_loss)])
            ).tolist()
            mean_loss = losses[0] / count
            progress.set_postfix(loss=f"{mean_loss:.4f}", steps=self.steps, refresh=False)
            if self.log_metrics is not None:
                names = [t.name for t in self.tasks]
                metrics = {"train/loss": mean_loss, **{f"train/loss/{n}": x for n, x in zip(names, losses[1:])}}
                self.log_metrics({**metrics, **self._window_metrics()}, iteration + 1)
        self._window_loss.zero_()
        self._window_steps.zero_()

    def _window_metrics(self) -> Dict[str, float]:
        """More figures to log at the end of a window (a subclass's: the plugin logs the coefficients')."""
        return {}

    def run(self, on_visit: Optional[Callable[["TintingTrainer"], None]] = None) -> AdaptationStats:
        """Adapt until ``max_steps`` iterations are done (from where the loop is: a resumed loop continues).
        ``on_visit`` is called after every task step, e.g. to checkpoint."""
        start = time.perf_counter()
        bar = progress(total=self.options.max_steps, initial=self.iteration, desc="Model Tinting adaptation")
        try:
            first_iteration = self._iterate(bar, on_visit, start)
        finally:  # also when a callback stops the run (Ctrl-C): the bar is done before anything is printed
            bar.close()
        self._settle_empty_steps()
        self.seconds += time.perf_counter() - start
        kept = [int(k) for k in self._kept]
        final_losses = self.data_parallel.all_reduce_sum(torch.stack(self._last_loss))  # each process's share
        return AdaptationStats(
            optimizer_steps=self.steps,
            skipped_steps=self.skipped,
            seconds=self.seconds,
            samples_seen={t.name: seen for t, seen in zip(self.tasks, self._seen)},
            samples_dropped={t.name: seen - k for t, seen, k in zip(self.tasks, self._seen, kept)},
            final_loss={t.name: float(loss) for t, loss in zip(self.tasks, final_losses)},
            first_iteration_seconds=first_iteration or 0.0,
        )

    def _iterate(self, progress, on_visit, start: float) -> Optional[float]:
        """The loop itself; returns the seconds of this run's first iteration."""
        num_tasks = len(self.tasks)
        first_iteration: Optional[float] = None
        while self.iteration < self.options.max_steps:
            if self.order is None:  # a new iteration: a fresh random task order
                self.order = torch.randperm(num_tasks, generator=self.generator).tolist()
                self.position = 0
            while self.position < num_tasks:
                self._sequential_step(self.order[self.position])
                self.position += 1
                self.visits += 1
                if on_visit is not None:
                    on_visit(self)
            if (self.iteration + 1) % self.options.log_every == 0 or self.iteration + 1 == self.options.max_steps:
                self._log_window(self.iteration, progress)
            self.iteration += 1
            self.order = None
            progress.update(1)
            if first_iteration is None:
                first_iteration = seconds_since(start, self.device)
        return first_iteration
