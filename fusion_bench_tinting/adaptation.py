"""The test-time adaptation loop of Model Tinting (family-agnostic).

Reference behaviour (docs/algorithm.md): Adam, one parameter group with the merging coefficients and every
task's tinted layer; each iteration visits the tasks in a fresh random order and makes one optimizer
step per task (gradients set to None first, so Adam leaves the other tasks' tinted layers alone).
``update="joint"`` sums all tasks' losses into one step per iteration instead (AdaMerging's way).

Teacher outputs are precomputed; the inputs are preprocessed once; nothing in a step synchronises with
the host. Model Tinting++ must not step on a batch whose every sample it dropped: with the fused Adam
(the default on CUDA) a sequential step cancels that update on the device (the optimizer's ``found_inf``,
as AMP's gradient scaler does); otherwise, and for ``update="joint"``, it asks the host whether the batch
kept a sample.

Data parallel (``DataParallel``): every process draws the same global batch (same seed), computes the
loss of its own slice normalised by the *global* sample count, and the gradients are summed across
processes before each step, so N processes make the same updates as one process with the same batch.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Dict, List, Mapping, Optional

import torch
from fusion_bench.utils.pylogger import get_rankzero_logger
from torch import Tensor, nn

from .compiled import compile_merge_and_encoder, compile_merged_features, mark_step_begin
from .console import progress
from .data import AdaptationInputs, EpochSampler
from .errors import NonFiniteError
from .losses import confidence_filter, per_sample_loss
from .merging import LayerWiseMerger

log = get_rankzero_logger(__name__)  # progress and summaries from the global-zero process only

EncodeFn = Callable[[Mapping[str, Tensor], Tensor], Tensor]


@dataclass
class DataParallel:
    """This process's place among ``world_size`` data-parallel processes, and a sum across them."""

    rank: int = 0
    world_size: int = 1
    all_reduce_sum: Callable[[Tensor], Tensor] = lambda tensor: tensor

    def local(self, batch: Tensor) -> Tensor:
        """This process's slice of a global batch (strided, so every slice has nearly the same size)."""
        return batch if self.world_size == 1 else batch[self.rank :: self.world_size]

    def sum_gradients(self, params: List[nn.Parameter]) -> None:
        """Sum the gradients of ``params`` over the processes in one collective call."""
        if self.world_size == 1:
            return
        with_grad = [p for p in params if p.grad is not None]
        if not with_grad:
            return
        flat = self.all_reduce_sum(torch.cat([p.grad.reshape(-1) for p in with_grad]))
        for p, piece in zip(with_grad, flat.split([p.numel() for p in with_grad])):
            p.grad.copy_(piece.view_as(p.grad))


@dataclass
class TaskState:
    """One task during adaptation."""

    name: str
    inputs: AdaptationInputs
    teacher: Tensor  # (num_samples, num_outputs), fp32, on the device
    head: nn.Module  # maps features to logits; trainable when the head is the tinted layer
    block: Dict[str, nn.Parameter] = field(default_factory=dict)  # the task's own copy of a block
    #: encoder tensors that belong to the task's head, not to the merge (BERT's pooler): the task's own
    #: fine-tuned values, trained with the head when the head is the tinted layer
    head_encoder: Dict[str, nn.Parameter] = field(default_factory=dict)
    #: the loss this task's outputs need whatever ``loss`` says (e.g. ``l1`` for a depth map), set by its family
    objective: Optional[str] = None

    @property
    def is_regression(self) -> bool:
        """Outputs that are not class scores (one value, or a fixed objective): no confidence filter."""
        return self.objective is not None or self.teacher.shape[1] == 1

    @property
    def outputs_per_sample(self) -> int:
        """Positions the loss is taken at in one sample: 1, or the pixels of a dense prediction
        (teacher outputs of shape (samples, channels, *positions))."""
        return int(math.prod(self.teacher.shape[2:]))

    def tinted_parameters(self) -> List[nn.Parameter]:
        if self.block:
            return list(self.block.values())
        return list(self.head_encoder.values()) + list(self.head.parameters())

    def own_tensors(self) -> Dict[str, nn.Parameter]:
        """Encoder tensors that replace merged ones in this task's forward."""
        return {**self.head_encoder, **self.block}


@dataclass
class AdaptationOptions:
    max_steps: int
    lr: float
    batch_size: int
    loss: str = "ce"
    update: str = "sequential"
    confidence_filter: bool = False
    train_coefficients: bool = True
    train_tinted_layer: bool = True
    #: iterations between logged loss and coefficient figures
    log_every: int = 10


@dataclass
class AdaptationStats:
    optimizer_steps: int
    skipped_steps: int
    seconds: float
    #: samples (positions, for a dense prediction) each task's steps saw, and those the ++ filter dropped
    samples_seen: Dict[str, int]
    samples_dropped: Dict[str, int]
    final_loss: Dict[str, float]
    #: the first iteration of this run, compilation included (``compile_step``)
    first_iteration_seconds: float = 0.0

    def dropped_fraction(self) -> Dict[str, float]:
        return {task: (self.samples_dropped[task] / seen if seen else 0.0) for task, seen in self.samples_seen.items()}


def iterations_done(state: Mapping[str, Any]) -> int:
    """Complete iterations in a trainer state (a checkpoint taken after the last task step of an iteration
    holds that iteration's index with every task visited)."""
    order = state["order"]
    return state["iteration"] + int(order is not None and state["position"] >= len(order))


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
        data_parallel: Optional[DataParallel] = None,
        section: Callable[[str], ContextManager] = lambda name: contextlib.nullcontext(),
        compile_options: Optional[Mapping[str, Any]] = None,
        fused_optimizer: Optional[bool] = None,
        grad_scaler: Optional[torch.amp.GradScaler] = None,
    ):
        if options.update not in ("sequential", "joint"):
            raise ValueError(f"update must be 'sequential' or 'joint', got {options.update!r}")
        self.merger = merger
        self.encode = encode
        self.tasks = tasks
        self.options = options
        self.device = device
        self.generator = generator
        self.input_dtype = input_dtype
        self.autocast = autocast
        self.log_metrics = log_metrics
        self.data_parallel = data_parallel or DataParallel()
        #: times the parts of a step (data, merge, forward, backward, optimizer) when profiling
        self.section = section
        self.samplers = [EpochSampler(len(t.inputs), options.batch_size, generator) for t in tasks]
        self._reset_counters()
        fused = device.type == "cuda" if fused_optimizer is None else fused_optimizer
        self.fused = fused
        self.optimizer, self._trained = self._make_optimizer(fused)
        #: fp16 autocast (``fabric.precision=16-mixed``): losses are scaled so that small gradients do not
        #: underflow in fp16; a step whose gradients overflow is skipped (Fabric's own GradScaler)
        self.scaler = grad_scaler
        # a ++ step on no kept sample is cancelled inside the fused update: no host sync (see module doc)
        self._skip_on_device = options.confidence_filter and fused and options.update == "sequential"
        self._fixed_merge: Optional[Dict[str, Tensor]] = None
        self._compile(compile_options)
        if options.confidence_filter and any(t.is_regression for t in tasks):
            names = [t.name for t in tasks if t.is_regression]
            log.warning(
                "Model Tinting++'s confidence filter is undefined for regression tasks %s: "
                "their steps use the plain loss on every sample.",
                names,
            )

    def _reset_counters(self) -> None:
        """Where the loop is and what it has counted (all of it goes into a checkpoint)."""
        device, tasks = self.device, self.tasks
        self._kept = [torch.zeros((), dtype=torch.long, device=device) for _ in tasks]
        self._seen = [0 for _ in tasks]
        self._last_loss = [torch.zeros((), device=device) for _ in tasks]
        # per task: summed norm of its steps' gradients of the coefficients, over the logging window
        self._coefficient_grad_norm = torch.zeros(len(tasks), device=device)
        self._coefficient_grad_steps = torch.zeros(len(tasks), device=device)
        # where the loop is: iteration, its task order and the next position in it
        self.iteration, self.order, self.position = 0, None, 0
        self.visits = self.steps = self.skipped = 0
        self.seconds = 0.0
        self._window_loss = torch.zeros((), device=device)
        self._window_count = torch.zeros((), device=device)
        # Model Tinting++ steps on a batch with no kept sample, counted on the device until the host reads them
        self._empty_steps = torch.zeros((), dtype=torch.long, device=device)
        self._empty_batch: Optional[Tensor] = None
        # fused steps: the first (task step * (tasks + 1) + task) whose loss was not finite, -1 while none was
        self._non_finite_at = torch.full((), -1, dtype=torch.long, device=device)

    def _compile(self, compile_options: Optional[Mapping[str, Any]]) -> None:
        """compile_step (see .compiled): merge + encoder as one compiled function shared by every task; when
        one merge serves several forwards (joint update) or is made once (frozen coefficients), apart."""
        self._compiled: Optional[Callable] = None
        self._merge: Callable[[], Dict[str, Tensor]] = self.merger
        if compile_options is None:
            return
        if self.options.update == "sequential" and self.options.train_coefficients:
            self._compiled = compile_merged_features(self.merger, self.encode, compile_options)
        else:
            self._merge, self.encode = compile_merge_and_encoder(self.merger, self.encode, compile_options)

    def _make_optimizer(self, fused: bool):
        """Adam, defaults, no weight decay, one parameter group (coefficients and every tinted layer) as
        the reference code. The fused implementation (default on CUDA) makes the update a couple of kernels
        instead of a few per tensor."""
        options = self.options
        self.merger.coefficients.requires_grad_(options.train_coefficients)
        coefficients = [self.merger.coefficients] if options.train_coefficients else []
        tinted: List[nn.Parameter] = []
        for task in self.tasks:
            for p in task.head_encoder.values():  # trained below only when they belong to the tinted layer
                p.requires_grad_(False)
            for p in task.tinted_parameters():
                p.requires_grad_(options.train_tinted_layer)
                if options.train_tinted_layer:
                    tinted.append(p)
        if not coefficients + tinted:
            raise ValueError("Nothing to train: enable train_coefficients and/or train_tinted_layer.")
        optimizer = torch.optim.Adam(
            coefficients + tinted,
            lr=options.lr,
            betas=(0.9, 0.999),
            weight_decay=0.0,
            **({"fused": True} if fused else {}),
        )
        return optimizer, coefficients + tinted

    # ----- pieces of a step --------------------------------------------------------------------
    def merged(self) -> Optional[Dict[str, Tensor]]:
        """The merged tensors, or None when the compiled function merges inside itself."""
        if self._compiled is not None:
            return None
        if self.options.train_coefficients:
            return self._merge()
        if self._fixed_merge is None:  # coefficients frozen: merge once
            with torch.no_grad():
                self._fixed_merge = {k: v.detach() for k, v in self.merger().items()}
        return self._fixed_merge

    def student_logits(self, task: TaskState, merged: Optional[Mapping[str, Tensor]], inputs: Tensor) -> Tensor:
        own = task.own_tensors()
        if merged is None:
            return task.head(self._compiled(own, inputs))
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
            if self._skip_on_device:  # an empty batch: zero loss, and the step cancels its own update
                self._empty_batch = kept == 0
                loss = (losses * keep).sum() / kept.clamp(min=1)
                self._last_loss[index] = torch.where(self._empty_batch, self._last_loss[index], loss.detach())
                return loss
            if not bool(kept > 0):  # host sync: a step on no sample must be skipped
                return None
            loss = (losses * keep).sum() / kept
        else:
            self._kept[index] += outputs
            loss = (losses.flatten(1).mean(1) if losses.ndim > 1 else losses).sum() / global_batch.numel()
        # the logged loss is this process's share; summed over processes it is the global batch's
        self._last_loss[index] = loss.detach()
        return loss

    # ----- loop --------------------------------------------------------------------------------
    def _begin_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._empty_batch = None
        if self._compiled is not None:
            mark_step_begin()

    def _sequential_step(self, index: int) -> None:
        self._begin_step()
        with self.section("merge"):
            merged = self.merged()
        loss = self.task_loss(index, merged)
        if loss is None:
            self.skipped += 1
            return
        cancelled = self._backward_and_step(loss, self._unless_not_finite(loss, index, self._empty_batch))
        self._record_coefficient_gradient(index)
        self.steps += 1
        self._window_loss += loss.detach()  # zero for an empty batch
        if cancelled is None:
            self._window_count += 1
        else:
            self._window_count += ~cancelled
            self._empty_steps += cancelled

    def _record_coefficient_gradient(self, index: int) -> None:
        """Add the norm of this step's coefficient gradient (unscaled) to task ``index``'s window, on the
        device; logged as ``coefficients/grad_norm/<task>`` to see how much signal each task gives them."""
        grad = self.merger.coefficients.grad
        if grad is not None and self.log_metrics is not None:
            self._coefficient_grad_norm[index] += grad.norm()
            self._coefficient_grad_steps[index] += 1

    def _backward_and_step(self, loss: Tensor, empty: Optional[Tensor]) -> Optional[Tensor]:
        """Backward, gradients summed over processes, optimizer step. Returns a device flag that is true when
        the step was cancelled (a ++ batch with no kept sample, or fp16 gradients that overflowed), or None
        when the step was certainly made."""
        with self.section("backward"):
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            self.data_parallel.sum_gradients(self._trained)
        with self.section("optimizer"):
            if self.scaler is not None:
                return self._scaled_step(empty)
            if empty is None:
                self.optimizer.step()
                return None
            self._step_unless(empty)
            return empty

    def _scaled_step(self, empty: Optional[Tensor]) -> Tensor:
        """The step under loss scaling: gradients unscaled in place, the step cancelled where they are not
        finite (or the ++ batch was empty), the scale updated from the overflow alone."""
        self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self._trained if p.grad is not None]
        finite = (
            torch.stack([g.isfinite().all() for g in grads]).all()
            if grads
            else torch.ones((), dtype=torch.bool, device=self.device)
        )
        cancelled = ~finite if empty is None else (~finite | empty)
        if self.fused:
            self._step_unless(cancelled)
        elif not bool(cancelled):  # host check: only the fused kernel can cancel a step on the device
            self.optimizer.step()
        self.scaler.update()
        return cancelled

    def _step_unless(self, empty: Tensor) -> None:
        """An optimizer step that the fused kernel skips on the device when ``empty`` is true (parameters,
        moments and step counts stay as they were, as if no step had been made)."""
        self.optimizer.found_inf = empty.float()
        try:
            self.optimizer.step()
        finally:
            self.optimizer.found_inf = None

    def _unless_not_finite(self, loss: Tensor, index: Optional[int], empty: Optional[Tensor]) -> Optional[Tensor]:
        """Stop on a NaN or infinite loss (task ``index``; None: the joint loss) before it reaches a parameter.
        Under fp16 loss scaling the scaler skips such steps as before. A step of the fused optimizer is cancelled
        on the device instead, and the run stops at the next host read (:meth:`_settle_empty_steps`): no sync per
        step. Returns the flag of steps to cancel."""
        if self.scaler is not None:
            return empty
        bad = ~torch.isfinite(loss.detach())
        if self.data_parallel.world_size > 1:  # every process must stop at the same step
            bad = self.data_parallel.all_reduce_sum(bad.float()) > 0
        if not self.fused:
            if bool(bad):
                raise self._non_finite_error(self.visits, index)
            return empty
        slots = len(self.tasks) + 1  # the last slot: the joint loss
        where = torch.tensor(self.visits * slots + (slots - 1 if index is None else index), device=self.device)
        self._non_finite_at = torch.where((self._non_finite_at == -1) & bad, where, self._non_finite_at)
        return bad if empty is None else bad | empty

    def _non_finite_error(self, visit: int, index: Optional[int]) -> NonFiniteError:
        task = "the summed loss of all tasks" if index is None else f"the loss of task {self.tasks[index].name!r}"
        per_iteration = len(self.tasks) if self.options.update == "sequential" else 1
        return NonFiniteError(
            f"{task} was NaN or infinite at step {visit + 1} (iteration {visit // per_iteration + 1}): "
            "the adaptation stopped before updating any parameter with it. Lower method.lr, or check the task's "
            "inputs and teacher outputs."
        )

    def _settle_empty_steps(self) -> None:
        """Move the device-side count of cancelled steps (++ batches with no kept sample, fp16 overflows)
        into the host's step counters (one sync); stop if a fused step met a non-finite loss."""
        at = int(self._non_finite_at)
        if at >= 0:
            visit, index = divmod(at, len(self.tasks) + 1)
            raise self._non_finite_error(visit, None if index == len(self.tasks) else index)
        empty = int(self._empty_steps)
        if empty:
            self.steps -= empty
            self.skipped += empty
            self._empty_steps.zero_()

    def _joint_step(self, order: List[int]) -> None:
        self._begin_step()
        with self.section("merge"):
            merged = self.merged()
        losses = [loss for loss in (self.task_loss(i, merged) for i in order) if loss is not None]
        if not losses:
            self.skipped += 1
            return
        total = torch.stack(losses).sum()
        cancelled = self._backward_and_step(total, self._unless_not_finite(total, None, None))
        self.steps += 1
        self._window_loss += total.detach() / len(losses)
        self._window_count += 1
        if cancelled is not None:
            self._empty_steps += cancelled

    def _log_window(self, iteration: int, progress) -> None:
        self._settle_empty_steps()
        count = float(self._window_count)
        if count:
            # one all-reduce: the window's loss and each task's latest loss (each process holds its share)
            losses = self.data_parallel.all_reduce_sum(
                torch.stack([self._window_loss, *(loss.float() for loss in self._last_loss)])
            ).tolist()
            mean_loss = losses[0] / count
            progress.set_postfix(loss=f"{mean_loss:.4f}", steps=self.steps, refresh=False)
            if self.log_metrics is not None:
                metrics = {"train/loss": mean_loss, **self._coefficient_metrics()}
                metrics.update({f"train/loss/{t.name}": loss for t, loss in zip(self.tasks, losses[1:])})
                if self.options.confidence_filter:
                    metrics.update(self._dropped_fractions())
                self.log_metrics(metrics, iteration + 1)
        self._window_loss = torch.zeros((), device=self.device)
        self._window_count = torch.zeros((), device=self.device)

    def _dropped_fractions(self) -> Dict[str, float]:
        """Model Tinting++: the share of each task's samples the filter has dropped so far."""
        kept = torch.stack(self._kept).tolist()
        return {
            f"filter/dropped_fraction/{t.name}": 1.0 - k / seen if seen else 0.0
            for t, k, seen in zip(self.tasks, kept, self._seen)
        }

    def _coefficient_metrics(self) -> Dict[str, float]:
        """Per task: the mean of its (clamped) coefficients and its steps' mean coefficient-gradient norm over
        the window; the mean, min and max of all coefficients (one host read for all)."""
        coefficients = self.merger.effective_coefficients().detach()
        steps = self._coefficient_grad_steps.clamp(min=1)
        rows = torch.stack([coefficients.mean(dim=1), self._coefficient_grad_norm / steps]).tolist()
        overall = torch.stack([coefficients.mean(), coefficients.min(), coefficients.max()]).tolist()
        self._coefficient_grad_norm.zero_()
        self._coefficient_grad_steps.zero_()
        metrics = {f"coefficients/{name}": value for name, value in zip(("mean", "min", "max"), overall)}
        for task, mean, grad_norm in zip(self.tasks, *rows):
            metrics[f"coefficients/mean/{task.name}"] = mean
            if self.options.train_coefficients:
                metrics[f"coefficients/grad_norm/{task.name}"] = grad_norm
        return metrics

    def run(self, on_visit: Optional[Callable[["TintingTrainer"], None]] = None) -> AdaptationStats:
        """Adapt until ``max_steps`` iterations are done (from where :meth:`load_state_dict` left off).
        ``on_visit`` is called after every task step (sequential) or joint step, e.g. to checkpoint."""
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
            if self.options.update == "sequential":
                while self.position < num_tasks:
                    self._sequential_step(self.order[self.position])
                    self.position += 1
                    self.visits += 1
                    if on_visit is not None:
                        on_visit(self)
            elif self.position == 0:
                self._joint_step(self.order)
                self.position = num_tasks
                self.visits += 1
                if on_visit is not None:
                    on_visit(self)
            if (self.iteration + 1) % self.options.log_every == 0 or self.iteration + 1 == self.options.max_steps:
                self._log_window(self.iteration, progress)
            self.iteration += 1
            self.order = None
            progress.update(1)
            if first_iteration is None:
                first_iteration = self._elapsed_since(start)
        return first_iteration

    def _elapsed_since(self, start: float) -> float:
        """Seconds since ``start`` with the device's queued work done (one synchronisation per run)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    # ----- state (checkpoints) -----------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue exactly where the loop is (between two task steps)."""
        self._settle_empty_steps()
        return {
            "iteration": self.iteration,
            "order": self.order,
            "position": self.position,
            "visits": self.visits,
            "steps": self.steps,
            "skipped": self.skipped,
            "seconds": self.seconds,
            "seen": list(self._seen),
            "kept": [int(k) for k in self._kept],
            "last_loss": [float(x) for x in self._last_loss],
            "coefficients": self.merger.coefficients.detach().cpu().clone(),
            "tinted": [[p.detach().cpu().clone() for p in t.tinted_parameters()] for t in self.tasks],
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "samplers": [s.state_dict() for s in self.samplers],
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
        }

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.iteration, self.order, self.position = state["iteration"], state["order"], state["position"]
        self.visits, self.steps, self.skipped = state["visits"], state["steps"], state["skipped"]
        self.seconds = state["seconds"]
        self._seen = list(state["seen"])
        self._kept = [torch.tensor(k, device=self.device) for k in state["kept"]]
        self._last_loss = [torch.tensor(x, device=self.device) for x in state["last_loss"]]
        self.merger.coefficients.copy_(state["coefficients"])
        for task, tensors in zip(self.tasks, state["tinted"]):
            for param, value in zip(task.tinted_parameters(), tensors):
                param.copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        for sampler, sampler_state in zip(self.samplers, state["samplers"]):
            sampler.load_state_dict(sampler_state)
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self._fixed_merge = None
