"""The method config files, written from the option declarations.

``python -m fusion_bench_tinting.method_configs`` rewrites ``config/method/model_tinting.yaml`` and
``config/method/lot_merging.yaml``; a test fails while a file and its declaration disagree.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Dict, Tuple

import yaml

from .core.options import Options
from .core.tinting_options import TINTING_OPTIONS
from .lot_merging.options import LOT_OPTIONS
from .methods import COMMAND_OPTIONS

CONFIG_DIR = Path(__file__).resolve().parent / "config" / "method"

_RULE = "# " + "=" * 77

#: file name -> (declared options, header comment, ``_target_``)
METHOD_CONFIGS: Dict[str, Tuple[Options, str, str]] = {
    "model_tinting.yaml": (
        COMMAND_OPTIONS,
        f"""{_RULE}
# Model Tinting (arXiv 2412.19098): layer-wise merging coefficients plus one trainable layer per
# task, adapted on unlabelled data against the fine-tuned models' predictions.
# Defaults are the reference implementation's.
# Written from fusion_bench_tinting/core/tinting_options.py and the plugin's options
# (fusion_bench_tinting/methods.py: PLUGIN_OPTIONS) by python -m fusion_bench_tinting.method_configs.
# Usage:
#   fusion_bench method=model_tinting modelpool=clip-vit-base-patch32_TA8
{_RULE}""",
        "fusion_bench_tinting.ModelTintingAlgorithm",
    ),
    "lot_merging.yaml": (
        LOT_OPTIONS,
        f"""{_RULE}
# LOT Merging (arXiv 2505.23859): closed-form, layer-wise merging that minimises the drift between
# each expert's features and the merged model's, from a few unlabelled samples per task.
# Written from fusion_bench_tinting/lot_merging/options.py (python -m fusion_bench_tinting.method_configs). Usage:
#   fusion_bench method=lot_merging modelpool=clip-vit-base-patch32_TA8
{_RULE}""",
        "fusion_bench_tinting.LOTMergingAlgorithm",
    ),
}


def render(options: Options, header: str, target: str) -> str:
    """A method's config file: ``header`` (comment lines), ``_target_`` and every option with its help."""
    lines = [header.rstrip("\n"), f"_target_: {target}"]
    for option in options.options.values():
        if option.section:
            lines += ["", f"# ----- {option.section} " + "-" * max(3, 100 - len(option.section))]
        lines += [f"# {line}" for line in textwrap.wrap(option.help, 110)]
        lines.append(yaml.safe_dump({option.name: option.default}, default_flow_style=False).strip())
    return "\n".join(lines) + "\n"


def rendered(name: str) -> str:
    options, header, target = METHOD_CONFIGS[name]
    return render(options, header, target)


def core_rendered() -> str:
    """``model_tinting.yaml`` with the core's options only (the upstream export's)."""
    _, header, target = METHOD_CONFIGS["model_tinting.yaml"]
    header = header.replace(
        "# Written from fusion_bench_tinting/core/tinting_options.py and the plugin's options\n"
        "# (fusion_bench_tinting/methods.py: PLUGIN_OPTIONS) by python -m fusion_bench_tinting.method_configs.\n",
        "# Every option is declared once, in tinting_options.py.\n",
    )
    assert "Written from" not in header, "the export's header still names the plugin"
    return render(TINTING_OPTIONS, header, target)


def main() -> None:
    for name in METHOD_CONFIGS:
        (CONFIG_DIR / name).write_text(rendered(name))
        print(f"wrote {CONFIG_DIR / name}")


if __name__ == "__main__":
    main()
