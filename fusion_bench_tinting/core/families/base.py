"""What the algorithm needs to know about a kind of model pool: the merge, teacher pass, loop and result are
written against this interface; each family implements it in its own module. A family works on *encoders* (the
merged part) and *heads* (one per task, encoder features -> the task's logits)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from fusion_bench import BaseModelPool
from torch import Tensor, nn
from torch.func import functional_call

from ..data import AdaptationInputs, TensorInputs, cache_inputs
from ..errors import TintingConfigError
from ..input_checks import check_image_shape, check_not_empty, dataset_labels, source_of

PRETRAINED = "_pretrained_"
#: the model pool's dataset splits, each a possible ``adaptation_data``
SPLITS = ("test", "val", "train")


class ProcessedImageInputs:
    """For a family whose images go through a Hugging Face processor (its ``processor``): the adaptation inputs,
    read as FusionBench's task pools read them (``ImageClassificationDataset``) and preprocessed once."""

    def adaptation_inputs(
        self,
        task: str,
        *,
        batch_size: int,
        num_workers: int,
        dtype: torch.dtype,
        indices: Optional[Sequence[int]] = None,
    ) -> TensorInputs:
        from fusion_bench.dataset.image_dataset import ImageClassificationDataset
        from torch.utils.data import Subset

        images = ImageClassificationDataset(self.adaptation_dataset(task), self.processor)
        if indices is not None:
            images = Subset(images, list(indices))
        image_processor = getattr(self.processor, "image_processor", self.processor)
        normalization = (image_processor.image_mean, image_processor.image_std)
        desc = f"Preprocessing {task}"
        return cache_inputs(
            images, batch_size=batch_size, num_workers=num_workers, dtype=dtype, desc=desc, normalization=normalization
        )


class ModelFamily(ABC):
    """Adapter between one FusionBench model pool type and the family-agnostic algorithm."""

    #: reference learning rates and iteration count for this family (docs/algorithm.md)
    default_lr_tinted_layer: float = 1e-2
    default_lr_coefficients_only: float = 1e-3
    default_max_steps: int = 500

    def __init__(
        self,
        modelpool: BaseModelPool,
        device: torch.device,
        adaptation_split: str = "test",
        head_projection: str = "merged",
        taskpool: Optional[Any] = None,
    ):
        self.modelpool = modelpool
        self.device = device
        #: which of the pool's datasets the adaptation reads: ``test`` (the paper's), ``val`` or ``train``
        self.adaptation_split = adaptation_split
        #: where a task-specific projection between the encoder body and the classifier goes, for
        #: families that have one (BERT's pooler): ``merged`` with the encoder (the whole encoder merged, as
        #: FusionBench's merging methods and LOT Merging do) or ``own`` (each task's, part of its head: Model
        #: Tinting's ``head_projection`` option, whose default it is)
        self.head_projection = head_projection
        #: the run's task pool, for families whose model pool does not say where the test data is
        self.taskpool = taskpool
        self._datasets: Dict[str, Any] = {}

    # ----- tasks -------------------------------------------------------------------------------
    def task_names(self) -> List[str]:
        names = list(self.modelpool.model_names)
        if not names:
            raise TintingConfigError(
                "The model pool has no fine-tuned models: Model Tinting merges at least one fine-tuned "
                "model into the `_pretrained_` one."
            )
        if not self.modelpool.has_pretrained:
            raise TintingConfigError("The model pool has no `_pretrained_` model to take task vectors against.")
        return names

    def validate_task(self, task: str) -> None:
        """Raise :class:`TintingConfigError` if ``task`` cannot be adapted (no data, no head, ...)."""
        split = self.adaptation_split
        if task not in self.adaptation_configs():
            splits = [s for s in SPLITS if task in (getattr(self.modelpool, f"_{s}_datasets", None) or {})]
            raise TintingConfigError(
                f"method.adaptation_data={split}: task {task!r} has no {split} dataset in the model pool (it has "
                f"{splits or 'no dataset'}). Model Tinting adapts on each task's unlabelled {split} inputs; add it "
                f"under `modelpool.{split}_datasets` or choose one of {splits}."
            )
        check_not_empty(task, self.adaptation_size(task), source_of(self.adaptation_configs()[task]))

    def adaptation_configs(self) -> Mapping[str, Any]:
        """The pool's dataset configs of the adaptation split, by task."""
        return getattr(self.modelpool, f"_{self.adaptation_split}_datasets", None) or {}

    # ----- models ------------------------------------------------------------------------------
    @abstractmethod
    def load_encoder(self, name: str) -> nn.Module:
        """The encoder (merged part) of model ``name`` (``_pretrained_`` or a task)."""

    @abstractmethod
    def load_head(self, task: str) -> nn.Module:
        """The task's original head: encoder features -> logits (the teacher's and the default tinted layer)."""

    @abstractmethod
    def features(self, encoder_output: Any, inputs: Any) -> Tensor:
        """The features a head consumes, from the encoder's forward output on ``inputs``."""

    def encoder_arguments(self, inputs: Any) -> Tuple[tuple, dict]:
        """Positional and keyword arguments of the encoder's forward for one batch."""
        if isinstance(inputs, Mapping):
            return (), dict(inputs)
        return (inputs,), {}

    def merged_parameter_names(self, encoder: nn.Module) -> List[str]:
        """Parameters that are merged (the encoder's, by default all of them)."""
        return [name for name, _ in encoder.named_parameters()]

    def head_encoder_parameter_names(self, encoder: nn.Module) -> List[str]:
        """Encoder parameters that belong to each task's head rather than to the merge: a task-specific
        projection that the encoder holds but only the task's classifier reads (BERT's pooler, with
        ``head_projection=own``). None for most families."""
        return []

    @abstractmethod
    def block_prefixes(self, encoder: nn.Module) -> List[str]:
        """Parameter-name prefix of each transformer block, in depth order."""

    def encode(self, encoder: nn.Module, inputs: Any, params: Optional[Mapping[str, Tensor]] = None) -> Tensor:
        """Features of a batch, with ``params`` (e.g. merged weights) replacing the encoder's own."""
        args, kwargs = self.encoder_arguments(inputs)
        if params is None:
            output = encoder(*args, **kwargs)
        else:
            output = functional_call(
                encoder, dict(params), args, kwargs, tie_weights=True, strict=False
            )  # as AdaMerging
        return self.features(output, inputs)

    def task_objective(self, task: str) -> Optional[str]:
        """The loss the task's outputs need whatever ``loss`` says (a depth map: ``l1``); None: ``loss``."""
        return None

    def num_outputs(self, task: str) -> Optional[int]:
        """Outputs of the task's head if known without loading the model (1 = regression), else None."""
        return None

    def is_regression(self, head: nn.Module) -> bool:
        """Whether a task's head has a single output (a regression task, e.g. STS-B)."""
        return False

    # ----- data --------------------------------------------------------------------------------
    @abstractmethod
    def adaptation_inputs(
        self,
        task: str,
        *,
        batch_size: int,
        num_workers: int,
        dtype: torch.dtype,
        indices: Optional[Sequence[int]] = None,
    ) -> AdaptationInputs:
        """The task's unlabelled test inputs (only rows ``indices`` when given), preprocessed once."""

    def adaptation_size(self, task: str) -> int:
        """Number of samples in the task's adaptation set."""
        return len(self.adaptation_dataset(task))

    def adaptation_labels(self, task: str) -> Optional[Tensor]:
        """The adaptation set's labels when they can be read without decoding its inputs, else None (never
        used to adapt: only to check they are classes of the task's head)."""
        return dataset_labels(self.adaptation_dataset(task))

    def adaptation_dataset(self, task: str) -> Any:
        """The task's adaptation set as the pool loads it, loaded once (sizes, labels and inputs all read it)."""
        if task not in self._datasets:
            load = getattr(self.modelpool, f"load_{self.adaptation_split}_dataset")
            self._datasets[task] = load(task)
        return self._datasets[task]

    def input_shape(self, encoder: nn.Module) -> Optional[Sequence[int]]:
        """The shape of one preprocessed sample the encoder reads (images: channels, height, width), if fixed."""
        return None

    def check_inputs(self, task: str, inputs: AdaptationInputs, encoder: nn.Module) -> None:
        """Before the teacher pass: the preprocessed inputs fit the encoder, or an error naming the task."""
        expected = self.input_shape(encoder)
        if expected is not None and isinstance(inputs, TensorInputs):
            check_image_shape(task, inputs.tensor.shape[1:], expected, source_of(self.adaptation_configs()[task]))

    def token_mask(self, inputs: Any) -> Optional[Tensor]:
        """A (batch, length) mask of the real tokens of a padded text batch; None for other inputs."""
        if isinstance(inputs, Mapping) and "attention_mask" in inputs:
            return inputs["attention_mask"]
        return None

    # ----- defaults ----------------------------------------------------------------------------
    def default_lr(self, train_tinted_layer: bool) -> float:
        return self.default_lr_tinted_layer if train_tinted_layer else self.default_lr_coefficients_only
