"""The merge and the encoder forward as one ``torch.compile``-d function: the plugin's option ``compile_step``
(the core's loop runs eagerly; :class:`CompiledStepMixin` adds the option and :class:`CompiledTintingTrainer`).

Why this piece: at CLIP sizes an eager step is bound by the host launching kernels (hundreds of small
merges, layer norms and matmuls for a batch of 32), so fusing them, and on CUDA replaying them as CUDA
graphs (``reduce-overhead``), is what brings a step near the device's floor.

What is compiled is the part of a step that is the same for every task: merge the task vectors with the
current coefficients, overlay the task's own tensors (a tinted block; none when the tinted layer is the
head) and run the encoder. The heads, whose shapes differ from task to task, and the loss stay eager
(a few small kernels), so K tasks share one compiled graph instead of compiling K times.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from .core.adaptation import TintingTrainer
from .core.errors import TintingConfigError
from .core.options import Option
from .core.run_state import TaskState

CompileStep = Union[bool, str, None]
#: torch.compile's modes (``reduce-overhead`` adds CUDA graphs on a GPU)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
MergedFeatures = Callable[[Mapping[str, Tensor], Any], Tensor]


def compile_options(compile_step: CompileStep, backend: str = "inductor") -> Optional[Dict[str, Any]]:
    """``torch.compile`` keyword arguments for the ``compile_step`` option, or None when the step stays eager.

    ``compile_step``: false (eager), true (torch.compile's default mode) or one of :data:`COMPILE_MODES`.
    ``backend``: a ``torch.compile`` backend (``inductor``; ``aot_eager`` traces without generating code).
    """
    if compile_step is None or compile_step is False:
        return None
    if compile_step is not True and compile_step not in COMPILE_MODES:
        raise TintingConfigError(
            f"compile_step={compile_step!r}: use false, true (torch.compile's default mode) "
            f"or one of {list(COMPILE_MODES)}."
        )
    import torch._dynamo

    backends = torch._dynamo.list_backends(exclude_tags=())
    if backend not in backends:
        raise TintingConfigError(
            f"compile_backend={backend!r} is not a torch.compile backend; known: {sorted(backends)}."
        )
    options: Dict[str, Any] = {"backend": backend, "fullgraph": False}
    if compile_step is not True:
        if backend != "inductor":
            raise TintingConfigError(
                f"compile_step={compile_step!r} is a mode of the inductor backend, not of {backend!r}."
            )
        options["mode"] = compile_step
    return options


def compile_merged_features(merger: torch.nn.Module, encode: Callable, options: Mapping[str, Any]) -> MergedFeatures:
    """``features(own, inputs)``: merge with ``merger``'s current coefficients, let ``own`` (a task's own
    tensors, possibly empty) replace merged ones, encode ``inputs``; compiled with ``options``."""

    def merged_features(own: Mapping[str, Tensor], inputs: Any) -> Tensor:
        merged = merger()
        return encode({**merged, **own} if own else merged, inputs)

    return torch.compile(merged_features, **options)


def compile_merge_and_encoder(
    merger: torch.nn.Module, encode: Callable, options: Mapping[str, Any]
) -> Tuple[Callable[[], Dict[str, Tensor]], Callable]:
    """The merge and the encoder compiled apart (``torch.compile`` compiles at the first call), for steps
    where the coefficients are frozen: then the trainer merges once, eagerly, and only the compiled encoder runs
    at each step."""
    return torch.compile(merger, **options), torch.compile(encode, **options)


def compiled_step(
    merger: torch.nn.Module, encode: Callable, options: Optional[Mapping[str, Any]], merges_per_step: bool
) -> Tuple[Optional[MergedFeatures], Callable[[], Dict[str, Tensor]], Callable]:
    """``(merged_features, merge, encode)`` for ``compile_step``: with ``merges_per_step`` (trained
    coefficients) merge + encoder as one compiled function shared by every task; else the two
    compiled apart (:func:`compile_merge_and_encoder`); without ``options`` (no compilation), as given."""
    if options is None:
        return None, merger, encode
    if merges_per_step:
        return compile_merged_features(merger, encode, options), merger, encode
    return (None, *compile_merge_and_encoder(merger, encode, options))


def mark_step_begin() -> None:
    """Tell CUDA-graph trees that a new step starts (a Model Tinting++ step skipped before its backward
    would otherwise leave a pending graph); harmless without CUDA graphs."""
    torch.compiler.cudagraph_mark_step_begin()


def _compile_mode(value: Any) -> bool:
    return isinstance(value, bool) or value in COMPILE_MODES


COMPILE_STEP_OPTION = Option(
    "compile_step",
    False,
    _compile_mode,
    "false, true or a torch.compile mode",
    "torch.compile the merge + encoder forward: false | true | reduce-overhead (CUDA graphs) | ...; the "
    "compilation counts in the adaptation time",
    changes_result=False,
    section="The plugin's speed option",
)


class CompiledTintingTrainer(TintingTrainer):
    """The core's loop with the merge and the encoder compiled (``compile_options``: None keeps it eager)."""

    def __init__(self, *args: Any, compile_options: Optional[Mapping[str, Any]] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        merges_per_step = self.options.train_coefficients
        self._compiled, self._merge, self.encode = compiled_step(
            self.merger, self.encode, compile_options, merges_per_step
        )

    def merged(self) -> Optional[Dict[str, Tensor]]:
        return None if self._compiled is not None else super().merged()

    def student_logits(self, task: TaskState, merged: Optional[Mapping[str, Tensor]], inputs: Tensor) -> Tensor:
        if merged is None:
            return task.head(self._compiled(task.own_tensors(), inputs))
        return super().student_logits(task, merged, inputs)

    def _begin_step(self) -> None:
        super()._begin_step()
        if self._compiled is not None:
            mark_step_begin()


class CompiledStepMixin:
    """Model Tinting with the ``compile_step`` option (``compile_backend``: a setting, for tests and benchmarks)."""

    compile_backend: str = "inductor"
    trainer_class = CompiledTintingTrainer

    def _check_options(self) -> None:
        super()._check_options()
        compile_options(self.compile_step, self.compile_backend)  # raises on a bad mode or backend

    def _trainer_settings(self) -> Dict[str, Any]:
        return {
            **super()._trainer_settings(),
            "compile_options": compile_options(self.compile_step, self.compile_backend),
        }

    def _result(self, run: Any, stats: Any) -> Any:
        model = super()._result(run, stats)
        if stats is not None:
            model.report_extras["compile_step"] = self.compile_step
        return model
