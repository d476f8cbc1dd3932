"""Every option of the tinting methods, checked when the method is constructed (before any model is loaded).

Each option has a rule: a test of its value and the words that say what is allowed. A value Hydra passes
through unconverted (``max_steps=abc`` arrives as the string ``'abc'``, ``confidence_filter=maybe`` as
``'maybe'``) fails its rule with one line naming the option, the value and what is allowed, instead of a
conversion error deep in the run or a silently different run.
"""

from __future__ import annotations

import inspect
from numbers import Real
from typing import Any, Callable, Dict, Iterable, Mapping, Tuple

from .errors import TintingConfigError

Test = Callable[[Any], bool]


def is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def int_at_least(minimum: int) -> Test:
    return lambda value: is_int(value) and value >= minimum


def number_at_least(minimum: float) -> Test:
    return lambda value: is_number(value) and value >= minimum


def positive_number(value: Any) -> bool:
    return is_number(value) and value > 0


def one_of(choices: Iterable[Any]) -> Test:
    allowed = tuple(choices)
    return lambda value: isinstance(value, (str, bool, int)) and value in allowed and type(value) in {type(c) for c in allowed}


def or_auto(test: Test) -> Test:
    return lambda value: value == "auto" or test(value)


def or_none(test: Test) -> Test:
    return lambda value: value is None or test(value)


def _is_path(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _block_or_head(value: Any) -> bool:
    return value == "head" or (is_int(value) and value >= 0) or (isinstance(value, str) and value.isdigit())


_BOOLEAN = (is_bool, "true or false")


def rules(losses: Iterable[str], input_dtypes: Iterable[str], tensor_dtypes: Iterable[str], init_from: Iterable[str],
          splits: Iterable[str] = ("test", "val", "train")) -> Dict[str, Tuple[Test, str]]:
    """Option -> (test, what is allowed). The choices that other modules own are passed in."""
    losses, input_dtypes, tensor_dtypes, init_from, splits = map(tuple, (losses, input_dtypes, tensor_dtypes, init_from, splits))
    return {
        "max_steps": (or_auto(int_at_least(0)), "'auto' or an integer >= 0 (0 evaluates the initial merge)"),
        "lr": (or_auto(positive_number), "'auto' or a number > 0"),
        "batch_size": (int_at_least(1), "an integer >= 1"),
        "init_values": (or_auto(is_number), "'auto' or a number"),
        "tinted_layer": (_block_or_head, "'head' or the index (>= 0) of a transformer block"),
        "loss": (one_of(losses), f"one of {list(losses)}"),
        "update": (one_of(("sequential", "joint")), "'sequential' (reference) or 'joint'"),
        "seed": (or_none(is_int), "null (the program's seed) or an integer"),
        "weights": (or_none(_is_path), "null or the path of a saved run"),
        "input_dtype": (one_of(input_dtypes), f"one of {list(input_dtypes)}"),
        "inputs_on_device": (or_auto(is_bool), "'auto', true or false"),
        "preprocess_batch_size": (int_at_least(1), "an integer >= 1"),
        "num_workers": (or_auto(int_at_least(0)), "'auto' or an integer >= 0"),
        "log_every": (int_at_least(1), "an integer >= 1"),
        "checkpoint_every": (int_at_least(0), "an integer >= 0 (0: no checkpoints)"),
        "keep_checkpoints": (int_at_least(1), "an integer >= 1"),
        "resume": (or_none(_is_path), "null or a run's log folder"),
        "init_from": (one_of(init_from), f"one of {list(init_from)}"),
        "lot_num_samples": (int_at_least(1), "an integer >= 1"),
        "lot_ridge": (number_at_least(0), "a number >= 0"),
        "task_vector_dtype": (one_of(tensor_dtypes), f"one of {list(tensor_dtypes)}"),
        "compile_step": (lambda v: isinstance(v, (bool, str)), "false, true or a torch.compile mode"),
        "compile_backend": (_is_path, "a torch.compile backend name"),
        "head_projection": (one_of(("own", "merged")), "one of ['own', 'merged']"),
        "coefficient_lr": (or_none(positive_number), "null (one learning rate) or a number > 0"),
        "zero_grad": (one_of(("none", "zero")), "one of ['none', 'zero']"),
        "empty_batch": (one_of(("skip", "step")), "one of ['skip', 'step']"),
        "adamerging_weights": (or_none(_is_path), "null or the path of AdaMerging's merging_weights.pt"),
        "surgery_rank": (int_at_least(1), "an integer >= 1 (the reference uses 16)"),
        "adaptation_data": (one_of(splits), f"one of {list(splits)}: the model pool's datasets the adaptation reads"),
        **{name: _BOOLEAN for name in (
            "clamp_weights", "tie_weights", "strict", "train_coefficients", "train_tinted_layer", "tie_qkv",
            "confidence_filter", "save_weights", "reuse_cache", "profile_steps", "evaluate_on_cached_inputs", "surgery",
        )},
    }


def check_values(values: Mapping[str, Any], option_rules: Mapping[str, Tuple[Test, str]]) -> None:
    """Raise :class:`TintingConfigError` for the first option whose value breaks its rule."""
    for name, (test, allowed) in option_rules.items():
        if name in values and not test(values[name]):
            raise TintingConfigError(f"method.{name}={values[name]!r}: {allowed}.")


#: keys FusionBench's own serialisable base class takes beside a method's options
FUSION_BENCH_KEYS = ("_recursive_", "_usage_", "_version_")


def check_known(given: Iterable[str], options: Iterable[str], config_file: str) -> None:
    """Refuse an option the method does not have (``+method.max_step=20`` would otherwise run a full default
    run with a warning mid-log), naming the closest one."""
    import difflib

    known = list(options)
    for name in given:
        if name in known or name in FUSION_BENCH_KEYS:
            continue
        closest = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"did you mean method.{closest[0]}? " if closest else ""
        raise TintingConfigError(f"method.{name}: no such option; {hint}Every option is listed in {config_file}.")


def check_init_values(init_values: Any, clamp: bool, clamp_range: Tuple[float, float]) -> None:
    """An initial coefficient outside the clamp range would sit on its edge, where the clamp's gradient is
    zero: it could never move."""
    if init_values == "auto" or not clamp:
        return
    low, high = clamp_range
    if not low <= init_values <= high:
        raise TintingConfigError(
            f"method.init_values={init_values!r} lies outside the clamp range [{low:g}, {high:g}]: every coefficient "
            "would be clamped and could not move. Choose a value inside it, or method.clamp_weights=false."
        )


def resolve_auto(lr: Any, max_steps: Any, init_values: Any, *, family_lr: float, family_max_steps: int,
                 num_tasks: int, init_from: str, debug: bool) -> Tuple[float, int, float]:
    """Learning rate, iterations and initial coefficient, with ``auto`` replaced by the family's reference
    values (init 0.3 up to 8 tasks, 0.1 beyond, as the reference; 0 from LOT: start at the LOT merge)."""
    resolved_lr = family_lr if lr == "auto" else float(lr)
    steps = family_max_steps if max_steps == "auto" else int(max_steps)
    if init_values != "auto":
        init = float(init_values)
    elif init_from == "lot":
        init = 0.0
    else:
        init = 0.3 if num_tasks <= 8 else 0.1
    return resolved_lr, (min(steps, 1) if debug else steps), init


def option_defaults(cls: type) -> Dict[str, Any]:
    """Every constructor option of a method class and its default, the subclasses' defaults winning."""
    defaults: Dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for name, parameter in inspect.signature(init).parameters.items():
            if parameter.default is not inspect.Parameter.empty:
                defaults[name] = parameter.default
    return defaults
