"""The methods a comparison can run, as ``fusion_bench`` overrides, and where each one exists.

Baselines are FusionBench's own method configs, unmodified. Where FusionBench 0.2.33 has no variant of a
method for a model family, the method is *not available* there (said so in the table), never replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Optional

FAMILIES = ("clip", "open_clip", "seq_cls", "gpt2", "image_cls")


@dataclass(frozen=True)
class MethodSpec:
    label: str
    overrides: Dict[str, List[str]]  # family (or "*") -> fusion_bench overrides
    ours: bool = False
    reference: bool = False  # a reference row (zero-shot, individual), not a merging baseline
    adaptive: bool = False  # uses the test inputs (test-time adaptation)
    #: the override that sets the run's seed (``--seeds``); None: the method draws nothing at random
    seed_key: Optional[str] = None
    #: takes ``method.adaptation_data``: it can adapt on other inputs than the scored ones (inductive)
    chooses_adaptation_data: bool = False

    def overrides_for(self, family: str) -> Optional[List[str]]:
        return self.overrides.get(family, self.overrides.get("*"))


METHODS: Dict[str, MethodSpec] = {
    "pretrained": MethodSpec("Pretrained / zero-shot", {"*": ["method=dummy"]}, reference=True),
    "individual": MethodSpec("Individual fine-tuned", {"*": ["method=individual"]}, reference=True),
    "simple_average": MethodSpec("Simple average", {"*": ["method=simple_average"]}),
    "task_arithmetic": MethodSpec("Task Arithmetic", {"*": ["method=task_arithmetic"]}),
    "ties_merging": MethodSpec("TIES-Merging", {"*": ["method=ties_merging"]}),
    "adamerging": MethodSpec(
        "AdaMerging (layer-wise)",
        {
            "clip": ["method=adamerging/clip", "method.name=clip_layer_wise_adamerging"],
            "gpt2": ["method=adamerging/layer_wise_gpt2"],
        },
        adaptive=True,
        seed_key="seed",
    ),
    "adamerging_surgery": MethodSpec(
        "AdaMerging + Surgery", {"clip": ["method=surgery/adamerging_surgery"]}, adaptive=True, seed_key="seed"
    ),
    "emr_merging": MethodSpec("EMR-Merging", {"*": ["method=emr_merging/emr_merging"]}),
    # FusionBench 0.2.33 has no LOT Merging: this plugin's implementation, for every family
    "lot_merging": MethodSpec(
        "LOT Merging (this plugin)",
        {"*": ["method=lot_merging"]},
        adaptive=True,
        seed_key="method.seed",
        chooses_adaptation_data=True,
    ),
    "model_tinting": MethodSpec(
        "Model Tinting",
        {"*": ["method=model_tinting"]},
        ours=True,
        adaptive=True,
        seed_key="method.seed",
        chooses_adaptation_data=True,
    ),
    "model_tinting_plusplus": MethodSpec(
        "Model Tinting++",
        {"*": ["method=model_tinting_plusplus"]},
        ours=True,
        adaptive=True,
        seed_key="method.seed",
        chooses_adaptation_data=True,
    ),
    # not in the default list: Model Tinting started from the LOT-merged encoder
    "model_tinting_lot": MethodSpec(
        "Model Tinting from LOT",
        {"*": ["method=model_tinting", "method.init_from=lot"]},
        ours=True,
        adaptive=True,
        seed_key="method.seed",
        chooses_adaptation_data=True,
    ),
    # not in the default list: AdaMerging's entropy objective run by our implementation (coefficients
    # only), for families where FusionBench has no AdaMerging
    "entropy_coefficients": MethodSpec(
        "Entropy, coefficients only (ours)",
        {"*": ["method=model_tinting", "method.loss=entropy", "method.train_tinted_layer=false"]},
        ours=True,
        adaptive=True,
        seed_key="method.seed",
        chooses_adaptation_data=True,
    ),
}
DEFAULT_METHODS = [
    "pretrained",
    "individual",
    "simple_average",
    "task_arithmetic",
    "ties_merging",
    "adamerging",
    "adamerging_surgery",
    "emr_merging",
    "lot_merging",
    "model_tinting",
    "model_tinting_plusplus",
]


def register_variant(name: str, base: str, overrides: List[str]) -> MethodSpec:
    """A comparison row ``name``: method ``base`` run with ``overrides`` (given to the run as the row's
    ``--set`` overrides), labelled by them."""
    if base not in METHODS:
        raise ValueError(f"variant {name!r}: unknown base method {base!r}; choose from {sorted(METHODS)}")
    if name in METHODS:
        raise ValueError(f"variant {name!r}: the name is already a method")
    spec = METHODS[base]
    shown = ", ".join(o.removeprefix("method.") for o in overrides)
    METHODS[name] = replace(spec, label=f"{spec.label} ({shown})" if shown else spec.label)
    return METHODS[name]


#: the protocols a comparison can score adaptive methods under, and the split each adapts on
PROTOCOLS = {"transductive": "test", "inductive": "val"}
INDUCTIVE_SUFFIX = "@inductive"


def inductive_twin(name: str) -> Optional[str]:
    """Register row ``<name>@inductive``: ``name`` adapting on the pool's ``val`` inputs while scored on its test
    inputs (its overrides: ``name``'s plus ``method.adaptation_data=val``, see the comparison's ``--set``).
    None for a method that cannot choose its adaptation data (FusionBench's AdaMerging, data-free methods)."""
    spec = METHODS[name]
    if not spec.chooses_adaptation_data:
        return None
    twin = name + INDUCTIVE_SUFFIX
    if twin not in METHODS:
        METHODS[twin] = replace(spec, label=f"{spec.label} [inductive: adapts on val]")
    return twin


def not_available_reason(name: str, family: str) -> Optional[str]:
    if METHODS[name].overrides_for(family) is None:
        return f"FusionBench 0.2.33 has no {METHODS[name].label} for this model family ({family})"
    return None


def family_of(modelpool_target: str) -> str:
    """The model family of a model pool class path."""
    name = modelpool_target.rsplit(".", 1)[-1]
    if name == "OpenCLIPVisionModelPool":
        return "open_clip"
    if name == "CLIPVisionModelPool":
        return "clip"
    if "GPT2" in name:
        return "gpt2"
    if "SequenceClassification" in name:
        return "seq_cls"
    if "ImageClassif" in name:  # FusionBench's ResNet/ConvNeXt/DINOv2 pools, this plugin's timm pool
        return "image_cls"
    raise ValueError(f"no comparison support for model pools of type {name}")
