"""The options of Model Tinting, each declared once (:mod:`.options` derives the rest): the paper's, what a run
needs, what fits a model on a GPU, or what was measured to change a result (docs/generalization.md)."""

from __future__ import annotations

from .families.base import SPLITS
from .losses import LOSSES
from .options import (
    BOOLEAN,
    Option,
    Options,
    int_at_least,
    is_bool,
    is_int,
    is_number,
    one_of,
    or_auto,
    or_none,
    positive_number,
)
from .teacher_pass import INPUT_DTYPES, TENSOR_DTYPES


def _block_or_head(value) -> bool:
    return value == "head" or (is_int(value) and value >= 0) or (isinstance(value, str) and value.isdigit())


TINTING_OPTIONS = Options(
    "config/method/model_tinting.yaml",
    [
        Option(
            "max_steps", "auto", or_auto(int_at_least(0)),
            "'auto' or an integer >= 0 (0 evaluates the initial merge)",
            "iterations of one step per task (auto: 500 for vision, 1000 for text); 0 evaluates the initial merge",
            section="The method: the paper's and the reference code's choices",
        ),
        Option(
            "lr", "auto", or_auto(positive_number), "'auto' or a number > 0",
            "Adam's learning rate (auto: 1e-2 with the tinted layer trained, 5e-4 for text; 1e-3 coefficients only)",
        ),
        Option("batch_size", 32, int_at_least(1), "an integer >= 1", "samples per task step"),
        Option(
            "init_values", "auto", or_auto(is_number), "'auto' or a number",
            "initial merging coefficient (auto: 0.3 up to 8 tasks, 0.1 above)",
        ),
        Option("clamp_weights", True, *BOOLEAN, "clamp the coefficients to [0, 1] (as the reference)"),
        Option(
            "tinted_layer", "head", _block_or_head, "'head' or the index (>= 0) of a transformer block",
            "head | the index of a transformer block",
        ),
        Option("train_coefficients", True, *BOOLEAN, "train the merging coefficients (false: heads only)"),
        Option("train_tinted_layer", True, *BOOLEAN, "train each task's tinted layer (false: coefficients only)"),
        Option("loss", "ce", one_of(LOSSES), f"one of {list(LOSSES)}", " | ".join(LOSSES)),
        Option("confidence_filter", False, *BOOLEAN, "Model Tinting++'s filter; a batch with no sample left: no step"),
        Option(
            "adaptation_data", "test", one_of(SPLITS),
            f"one of {list(SPLITS)}: the model pool's datasets the adaptation reads",
            "the pool's datasets to adapt on: test (the paper's: the scored inputs) | val | train (unseen ones)",
        ),
        Option(
            "seed", None, or_none(is_int), "null (the program's seed) or an integer",
            "seeds task order, batches and initialisations (null: the program's `seed=`, else 42)",
            section="The run: seed, saved weights",
        ),
        Option("save_weights", True, *BOOLEAN, "save coefficients and tinted layers in the log folder", False),
        Option(
            "input_dtype", "uint8", one_of(INPUT_DTYPES), f"one of {list(INPUT_DTYPES)}",
            "dtype of the inputs preprocessed once (uint8: images exactly on their 8-bit grid; float16: ~1e-3 off)",
            section="Memory and speed: how, not what, is computed",
        ),
        Option(
            "inputs_on_device", "auto", or_auto(is_bool), "'auto', true or false",
            "keep the inputs on the accelerator (auto: when under a quarter of its free memory)", False,
        ),
        Option(
            "task_vector_dtype", "float32", one_of(TENSOR_DTYPES), f"one of {list(TENSOR_DTYPES)}",
            "dtype of the stored task vectors (bfloat16 halves the largest buffer; merges compute in float32)",
        ),
    ],
)  # fmt: skip
