"""Sequence classification models with one head per task (transformers ``*ForSequenceClassification``).

Pools: FusionBench's ``SequenceClassificationModelPool`` (models are whole classifiers: RoBERTa, BERT,
GPT-2, ...), ``GPT2ForSequenceClassificationPool`` and our ``SequenceClassificationEncoderPool`` (models
are encoders, classifiers come from ``load_classifier``). Encoder: the classifier's base model (merged).
Head of task k: the module the fine-tuned classifier applies to the encoder's output (RoBERTa: ``classifier`` = dense +
out_proj; BERT: ``classifier`` on the pooled output; GPT-2: ``score`` at the last non-padding token),
exactly as the classifier's own forward does, so a head can be put back into a classifier for
evaluation (:func:`task_classifier`).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from fusion_bench import BaseModelPool
from omegaconf import DictConfig
from torch import Tensor, nn

from ..core.errors import TintingConfigError
from ..core.families.base import PRETRAINED, ModelFamily
from ..core.input_checks import source_of
from .text_data import check_glue_task
from .token_inputs import TokenInputs, check_token_ids


def _sequence_output(output, inputs) -> Tensor:
    return output[0]  # RoBERTa's classification head takes the <s> token itself


def _pooled_output(output, inputs) -> Tensor:
    return output[1]  # BERT: pooler output (the pooler belongs to the encoder)


def _last_token(output, inputs) -> Tensor:
    hidden = output[0]
    last = inputs["attention_mask"].sum(dim=-1) - 1  # right padding
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


@dataclass(frozen=True)
class ClassifierLayout:
    head_attribute: str
    features: Callable[[Any, Mapping[str, Tensor]], Tensor]
    blocks: Callable[[nn.Module], int]
    #: encoder parameters (by name prefix) of a task-specific projection that only the classifier reads
    #: (BERT's pooler: dense + tanh on the first token), or None
    projection_prefix: Optional[str] = None


def _encoder_layers(encoder: nn.Module) -> int:
    return len(encoder.encoder.layer)


LAYOUTS: Dict[str, ClassifierLayout] = {
    "roberta": ClassifierLayout("classifier", _sequence_output, _encoder_layers),
    "xlm-roberta": ClassifierLayout("classifier", _sequence_output, _encoder_layers),
    "camembert": ClassifierLayout("classifier", _sequence_output, _encoder_layers),
    "bert": ClassifierLayout("classifier", _pooled_output, _encoder_layers, projection_prefix="pooler."),
    "gpt2": ClassifierLayout("score", _last_token, lambda encoder: len(encoder.h)),
}
BLOCK_PREFIX = {"gpt2": "h.{}."}
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model")


def layout_for(model_type: str) -> ClassifierLayout:
    if model_type not in LAYOUTS:
        raise TintingConfigError(
            f"Sequence classification models of type {model_type!r} are not supported yet; supported: "
            f"{sorted(LAYOUTS)} (each needs to know which module is the head and what it reads)."
        )
    return LAYOUTS[model_type]


def load_classifier(modelpool: BaseModelPool, name: str) -> nn.Module:
    """The whole fine-tuned classifier of ``name``: pools whose ``load_model`` gives encoders (FusionBench's
    GPT-2 pool, our ``SequenceClassificationEncoderPool``) have ``load_classifier``."""
    if callable(getattr(modelpool, "load_classifier", None)):
        return modelpool.load_classifier(name)
    return modelpool.load_model(name)


def encoder_of(model: nn.Module) -> nn.Module:
    """The encoder inside a merged model: a TintedModel/ModulatedModel's backbone, a classifier's base
    model, or the model itself when it already is an encoder (GPT-2 pools merge ``GPT2Model``s)."""
    model = getattr(model, "backbone", model)
    prefix = getattr(model, "base_model_prefix", None)
    if prefix and hasattr(model, prefix):
        return getattr(model, prefix)
    return model


def task_classifier(modelpool: BaseModelPool, task: str, model: nn.Module) -> nn.Module:
    """Task ``task``'s fine-tuned classifier with ``model``'s (merged) encoder in place of its own and,
    when ``model`` has one for the task, ``model``'s head in place of the fine-tuned head."""
    if callable(getattr(model, "set_task", None)):
        model.set_task(task)
    classifier = load_classifier(modelpool, task)
    setattr(classifier, classifier.base_model_prefix, encoder_of(model))
    task_head = getattr(model, "task_head", None)
    head = task_head(task) if callable(task_head) else None
    if head is not None:
        setattr(classifier, layout_for(classifier.config.model_type).head_attribute, head)
    return classifier.eval()


class SequenceClassificationFamily(ModelFamily):
    default_lr_tinted_layer = 5e-4
    default_lr_coefficients_only = 5e-4
    default_max_steps = 1000

    def __init__(self, modelpool: BaseModelPool, device: torch.device, **options: Any):
        super().__init__(modelpool, device, **options)
        self._tokenizer = None
        self._model_type: Optional[str] = None
        self._last_loaded = None

    # ----- checks --------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = (
                self.modelpool.load_tokenizer()
                if hasattr(self.modelpool, "load_tokenizer")
                else self.modelpool.tokenizer
            )
        return self._tokenizer

    def _model_path(self, name: str):
        config = self.modelpool._models[name]
        if isinstance(config, str):
            return config, None
        if isinstance(config, (dict, DictConfig)):
            return config.get("pretrained_model_name_or_path"), config.get("subfolder")
        return None, None

    def _config(self, name: str):
        from transformers import AutoConfig

        path, subfolder = self._model_path(name)
        if path is None:
            return None
        return AutoConfig.from_pretrained(path, **({"subfolder": subfolder} if subfolder else {}))

    def expected_load_report(self, source: str, rows: List[Tuple[str, str]]) -> bool:
        """The pretrained encoder read as a classifier gets a new, unused head (each task brings its own)."""
        pretrained, _ = self._model_path(PRETRAINED)
        return source == str(pretrained) and all(
            status == "MISSING" and key.startswith(("classifier.", "score.")) for key, status in rows
        )

    def num_outputs(self, task: str) -> Optional[int]:
        config = self._config(task)
        return None if config is None else int(config.num_labels)

    def validate_task(self, task: str) -> None:
        path, _ = self._model_path(task)  # first: a suite not built yet has neither checkpoints nor data
        if path is not None and (path.startswith((".", "/", "~")) and not os.path.exists(os.path.expanduser(path))):
            raise TintingConfigError(
                f"The checkpoint of task {task!r} does not exist: {path} (from {os.getcwd()}). For the offline suite "
                "`minilm_text`, build it first with `fusion-bench-tinting-build-minilm-text` (or `python "
                "scripts/build_minilm_text.py` in the repository), or point FUSION_BENCH_TINTING_MINILM_TEXT at it."
            )
        super().validate_task(task)
        dataset_config = self.adaptation_configs()[task]
        if isinstance(dataset_config, (dict, DictConfig)) and str(dataset_config.get("_target_", "")).endswith(
            "load_glue"
        ):
            check_glue_task(dataset_config.get("name"))
        self._check_tokenizer(task, path)
        self._check_labels(task)

    def _check_tokenizer(self, task: str, path: Optional[str]) -> None:
        """A local checkpoint that ships its own tokenizer must ship the pool's."""
        folder = os.path.expanduser(path) if path else None
        if folder is None or not any(os.path.exists(os.path.join(folder, f)) for f in TOKENIZER_FILES):
            return  # no tokenizer of its own: the pool's is used
        from transformers import AutoTokenizer

        own = AutoTokenizer.from_pretrained(folder)
        if own.get_vocab() != self.tokenizer.get_vocab():
            raise TintingConfigError(
                f"The checkpoint of task {task!r} ships a tokenizer whose vocabulary differs from the model "
                "pool's tokenizer: its inputs would be tokenized differently from what it was fine-tuned on. "
                "All tasks must share the pretrained model's tokenizer."
            )

    def _check_labels(self, task: str) -> None:
        """The classes the data declares are the checkpoint's (labels outside the head's classes are found
        by :func:`..input_checks.check_labels` once the head is loaded)."""
        num_outputs = self.num_outputs(task)
        if num_outputs is None or num_outputs == 1:
            return
        dataset = self.adaptation_dataset(task)
        if "label" not in getattr(dataset, "column_names", []):
            return
        declared = getattr(dataset.features["label"], "num_classes", None)
        if declared is not None and declared != num_outputs:
            raise TintingConfigError(
                f"The checkpoint of task {task!r} predicts {num_outputs} labels but the task's data has {declared}: "
                "the model pool pairs this task with the wrong checkpoint or dataset."
            )

    def check_inputs(self, task: str, inputs: Any, encoder: nn.Module) -> None:
        if isinstance(inputs, TokenInputs):
            source = source_of(self.adaptation_configs()[task])
            check_token_ids(
                task,
                inputs.columns["input_ids"],
                encoder.get_input_embeddings().num_embeddings,
                _max_positions(encoder.config),
                source,
            )

    # ----- models ------------------------------------------------------------------------------
    def _remember_type(self, model_type: str) -> ClassifierLayout:
        if self._model_type is None:
            self._model_type = model_type
        return layout_for(model_type)

    @property
    def layout(self) -> ClassifierLayout:
        if self._model_type is None:
            self.load_encoder(PRETRAINED)
        return layout_for(self._model_type)

    def _classifier(self, name: str) -> nn.Module:
        # one-slot cache: the algorithm asks for a task's encoder and then its head
        if self._last_loaded is None or self._last_loaded[0] != name:
            classifier = load_classifier(self.modelpool, name)
            self._remember_type(classifier.config.model_type)
            self._last_loaded = (name, classifier)
        return self._last_loaded[1]

    def load_encoder(self, name: str) -> nn.Module:
        return encoder_of(self._classifier(name)).eval().requires_grad_(False)

    def load_head(self, task: str) -> nn.Module:
        classifier = self._classifier(task)
        head = copy.deepcopy(getattr(classifier, self.layout.head_attribute))
        self._last_loaded = None
        return head.float().eval().requires_grad_(False).to(self.device)

    def is_regression(self, head: nn.Module) -> bool:
        out = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
        return out.out_features == 1

    def features(self, encoder_output: Any, inputs: Any) -> Tensor:
        return self.layout.features(encoder_output, inputs)

    def head_encoder_parameter_names(self, encoder: nn.Module) -> List[str]:
        """BERT's pooler with ``head_projection=own``: each fine-tuned classifier's pooler is trained for
        its task alone, like the dense layer of RoBERTa's head, so it stays the task's (not merged) and is
        tinted with the classifier, which makes BERT's tinted layer the analogue of RoBERTa's."""
        prefix = layout_for(encoder.config.model_type).projection_prefix
        if self.head_projection != "own" or prefix is None:
            return []
        return [n for n, _ in encoder.named_parameters() if n.startswith(prefix)]

    def block_prefixes(self, encoder: nn.Module) -> List[str]:
        model_type = encoder.config.model_type
        pattern = BLOCK_PREFIX.get(model_type, "encoder.layer.{}.")
        return [pattern.format(i) for i in range(layout_for(model_type).blocks(encoder))]

    # ----- data --------------------------------------------------------------------------------
    def adaptation_inputs(
        self,
        task: str,
        *,
        batch_size: int,
        num_workers: int,
        dtype: torch.dtype,
        indices: Optional[Sequence[int]] = None,
    ) -> TokenInputs:
        dataset = self.adaptation_dataset(task)
        if indices is not None:
            dataset = dataset.select(list(indices))
        columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in dataset.column_names]
        rows = dataset.select_columns(columns)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return TokenInputs.from_rows(list(rows), pad_token_id=pad)


def _max_positions(config: Any) -> Optional[int]:
    """The longest sequence the position table holds (RoBERTa's positions start after its padding id)."""
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if positions is not None and "roberta" in config.model_type:
        positions -= (config.pad_token_id or 0) + 1
    return positions
