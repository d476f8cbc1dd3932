"""The declared options of a method and their checks, made when the method is constructed: a value Hydra passes
through unconverted (``max_steps=abc`` arrives as ``'abc'``) fails its rule with one line naming the option, the
value and what is allowed, instead of a conversion error deep in the run or a silently different run."""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from numbers import Real
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

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
    return lambda value: (
        isinstance(value, (str, bool, int)) and value in allowed and type(value) in {type(c) for c in allowed}
    )


def or_auto(test: Test) -> Test:
    return lambda value: value == "auto" or test(value)


def or_none(test: Test) -> Test:
    return lambda value: value is None or test(value)


def is_path(value: Any) -> bool:
    return isinstance(value, str) and value != ""


BOOLEAN = (is_bool, "true or false")
#: keys FusionBench's own serialisable base class takes beside a method's options
FUSION_BENCH_KEYS = ("_recursive_", "_usage_", "_version_")


@dataclass(frozen=True)
class Option:
    """One method option: its default, the test of a value with the words for what is allowed, its one-line
    help (the YAML comment) and whether it changes the result (a checkpoint of another value is refused)."""

    name: str
    default: Any
    test: Test
    allowed: str
    help: str
    changes_result: bool = True
    #: the heading of the YAML section this option opens, if any
    section: str = ""


class Options:
    """A method's declared options: its constructor signature, checks, checkpoint fingerprint and YAML come
    from here (the plugin's ``python -m fusion_bench_tinting.method_configs`` writes the YAML files)."""

    def __init__(self, config_file: str, options: Sequence[Option]):
        self.config_file = config_file
        self.options = {option.name: option for option in options}

    def extended(self, more: Sequence[Option]) -> "Options":
        """These options and ``more`` (a front end's own), declared in the same file."""
        return Options(self.config_file, [*self.options.values(), *more])

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(self.options)

    def defaults(self) -> Dict[str, Any]:
        return {name: option.default for name, option in self.options.items()}

    def not_changing_result(self) -> Tuple[str, ...]:
        return tuple(name for name, option in self.options.items() if not option.changes_result)

    def signature(self) -> inspect.Signature:
        """``(self, <every option with its default>, **kwargs)``, for FusionBench's ``auto_register_config``."""
        keyword = inspect.Parameter.KEYWORD_ONLY
        parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        parameters += [inspect.Parameter(name, keyword, default=o.default) for name, o in self.options.items()]
        parameters.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
        return inspect.Signature(parameters)

    def refuse_unknown(self, given: Iterable[str]) -> None:
        """Refuse an option the method does not have (``+method.max_step=20`` would otherwise run a full default
        run with a warning mid-log), naming the closest one."""
        for name in given:
            if name in self.options or name in FUSION_BENCH_KEYS:
                continue
            closest = difflib.get_close_matches(name, self.names, n=1, cutoff=0.6)
            hint = f"did you mean method.{closest[0]}? " if closest else ""
            raise TintingConfigError(
                f"method.{name}: no such option; {hint}Every option is listed in {self.config_file}."
            )

    def check(self, values: Mapping[str, Any]) -> None:
        """Refuse the first value that breaks its option's rule."""
        for name, option in self.options.items():
            if name in values and not option.test(values[name]):
                raise TintingConfigError(f"method.{name}={values[name]!r}: {option.allowed}.")


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


def resolve_auto(
    lr: Any,
    max_steps: Any,
    init_values: Any,
    *,
    family_lr: float,
    family_max_steps: int,
    num_tasks: int,
    auto_init_value: Optional[float],
    debug: bool,
) -> Tuple[float, int, float]:
    """Learning rate, iterations and initial coefficient, with ``auto`` replaced by the family's reference
    values (init 0.3 up to 8 tasks, 0.1 beyond, as the reference, unless the start says otherwise)."""
    resolved_lr = family_lr if lr == "auto" else float(lr)
    steps = family_max_steps if max_steps == "auto" else int(max_steps)
    if init_values != "auto":
        init = float(init_values)
    elif auto_init_value is not None:
        init = auto_init_value
    else:
        init = 0.3 if num_tasks <= 8 else 0.1
    return resolved_lr, (min(steps, 1) if debug else steps), init
