"""The test-time adaptation loop of Model Tinting (family-agnostic).

Reference behaviour (ALGORITHM.md): Adam, one parameter group with the merging coefficients and every
task's tinted layer; each iteration visits the tasks in a fresh random order and makes one optimizer
step per task (gradients set to None first, so Adam leaves the other tasks' tinted layers alone).
``update="joint"`` sums all tasks' losses into one step per iteration instead (AdaMerging's way).

Teacher outputs are precomputed; the inputs are preprocessed once; nothing in a step synchronises with
the host except Model Tinting++'s check that a batch kept at least one sample.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Dict, List, Mapping, Optional

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .data import AdaptationInputs, EpochSampler
from .losses import confidence_filter, per_sample_loss
from .merging import LayerWiseMerger

log = logging.getLogger(__name__)

EncodeFn = Callable[[Mapping[str, Tensor], Tensor], Tensor]


@dataclass
class TaskState:
    """One task during adaptation."""

    name: str
    inputs: AdaptationInputs
    teacher: Tensor  # (num_samples, num_outputs), fp32, on the device
    head: nn.Module  # maps features to logits; trainable when the head is the tinted layer
    block: Dict[str, nn.Parameter] = field(default_factory=dict)  # the task's own copy of a block

    @property
    def is_regression(self) -> bool:
        return self.teacher.shape[-1] == 1

    def tinted_parameters(self) -> List[nn.Parameter]:
        return list(self.block.values()) if self.block else list(self.head.parameters())


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
    log_every: int = 10


@dataclass
class AdaptationStats:
    optimizer_steps: int
    skipped_steps: int
    seconds: float
    samples_seen: Dict[str, int]
    samples_dropped: Dict[str, int]
    final_loss: Dict[str, float]

    def dropped_fraction(self) -> Dict[str, float]:
        return {
            task: (self.samples_dropped[task] / seen if seen else 0.0) for task, seen in self.samples_seen.items()
        }


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
        self.samplers = [EpochSampler(len(t.inputs), options.batch_size, generator) for t in tasks]
        self._kept = [torch.zeros((), dtype=torch.long, device=device) for _ in tasks]
        self._seen = [0 for _ in tasks]
        self._last_loss = [torch.zeros((), device=device) for _ in tasks]

        merger.coefficients.requires_grad_(options.train_coefficients)
        params: List[nn.Parameter] = [merger.coefficients] if options.train_coefficients else []
        for task in tasks:
            for p in task.tinted_parameters():
                p.requires_grad_(options.train_tinted_layer)
                if options.train_tinted_layer:
                    params.append(p)
        if not params:
            raise ValueError("Nothing to train: enable train_coefficients and/or train_tinted_layer.")
        # one parameter group, Adam defaults, no weight decay: as the reference code
        self.optimizer = torch.optim.Adam(params, lr=options.lr, betas=(0.9, 0.999), weight_decay=0.0)
        self._fixed_merge: Optional[Dict[str, Tensor]] = None
        if options.confidence_filter and any(t.is_regression for t in tasks):
            names = [t.name for t in tasks if t.is_regression]
            log.warning(
                "Model Tinting++'s confidence filter is undefined for regression tasks %s: "
                "their steps use the plain loss on every sample.",
                names,
            )

    # ----- pieces of a step --------------------------------------------------------------------
    def merged(self) -> Dict[str, Tensor]:
        if self.options.train_coefficients:
            return self.merger()
        if self._fixed_merge is None:  # coefficients frozen: merge once
            with torch.no_grad():
                self._fixed_merge = {k: v.detach() for k, v in self.merger().items()}
        return self._fixed_merge

    def student_logits(self, task: TaskState, merged: Mapping[str, Tensor], inputs: Tensor) -> Tensor:
        params = {**merged, **task.block} if task.block else merged
        return task.head(self.encode(params, inputs))

    def task_loss(self, index: int, merged: Mapping[str, Tensor]) -> Optional[Tensor]:
        """Loss of one batch of task ``index`` (None when the ++ filter dropped every sample)."""
        task = self.tasks[index]
        batch = self.samplers[index].next()
        inputs = task.inputs.gather(batch, self.device, self.input_dtype)
        teacher = task.teacher.index_select(0, batch.to(self.device, non_blocking=True))
        with self.autocast():
            logits = self.student_logits(task, merged, inputs)
        losses = per_sample_loss(self.options.loss, logits, teacher)
        self._seen[index] += batch.numel()
        if self.options.confidence_filter and not task.is_regression:
            keep = confidence_filter(logits, teacher)
            kept = keep.sum()
            self._kept[index] += kept
            if not bool(kept > 0):  # the one host sync of ++: a step on no sample must be skipped
                return None
            loss = (losses * keep).sum() / kept
        else:
            self._kept[index] += batch.numel()
            loss = losses.mean()
        self._last_loss[index] = loss.detach()
        return loss

    # ----- loop --------------------------------------------------------------------------------
    def run(self) -> AdaptationStats:
        steps = skipped = 0
        start = time.perf_counter()
        window_loss = torch.zeros((), device=self.device)
        window_count = 0
        num_tasks = len(self.tasks)
        progress = tqdm(range(self.options.max_steps), desc="Model Tinting adaptation", dynamic_ncols=True)
        for iteration in progress:
            order = torch.randperm(num_tasks, generator=self.generator).tolist()
            if self.options.update == "sequential":
                for index in order:
                    self.optimizer.zero_grad(set_to_none=True)
                    loss = self.task_loss(index, self.merged())
                    if loss is None:
                        skipped += 1
                        continue
                    loss.backward()
                    self.optimizer.step()
                    steps += 1
                    window_loss += loss.detach()
                    window_count += 1
            else:
                self.optimizer.zero_grad(set_to_none=True)
                merged = self.merged()
                losses = [loss for loss in (self.task_loss(i, merged) for i in order) if loss is not None]
                if not losses:
                    skipped += 1
                else:
                    total = torch.stack(losses).sum()
                    total.backward()
                    self.optimizer.step()
                    steps += 1
                    window_loss += total.detach() / len(losses)
                    window_count += 1
            if (iteration + 1) % self.options.log_every == 0 or iteration + 1 == self.options.max_steps:
                if window_count:
                    mean_loss = (window_loss / window_count).item()
                    progress.set_postfix(loss=f"{mean_loss:.4f}", steps=steps)
                    if self.log_metrics is not None:
                        self.log_metrics({"train/loss": mean_loss}, iteration + 1)
                window_loss = torch.zeros((), device=self.device)
                window_count = 0
        progress.close()
        kept = [int(k) for k in self._kept]
        return AdaptationStats(
            optimizer_steps=steps,
            skipped_steps=skipped,
            seconds=time.perf_counter() - start,
            samples_seen={t.name: seen for t, seen in zip(self.tasks, self._seen)},
            samples_dropped={t.name: seen - k for t, seen, k in zip(self.tasks, self._seen, kept)},
            final_loss={t.name: float(loss) for t, loss in zip(self.tasks, self._last_loss)},
        )
