"""``fusion-bench-tinting-hub-ids --suite clip-vit-base-patch32_TA8``: the hub models and datasets a suite reads.

Prints one ``huggingface-cli download`` line per model or dataset id the suite's model pool and task pool name,
to run where the hub is reachable; copy the resulting Hugging Face cache (``HF_HOME``) to the machine that
cannot reach it. Ids are the configs' strings of the form ``owner/name`` that are not local paths.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Iterator, List, Optional, Tuple

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_ids(config: Any, in_datasets: bool = False) -> Iterator[Tuple[str, str]]:
    """(``model`` or ``dataset``, id) for every hub id in a composed config: the repository of every
    ``datasets.load_dataset`` call (``path`` or its first argument; ``mnist`` has no owner) and every other
    ``owner/name`` string (a dataset under a ``*datasets`` key, else a model)."""
    if isinstance(config, dict):
        if str(config.get("_target_", "")).endswith("load_dataset"):
            name = config.get("path") or (config.get("_args_") or [None])[0]
            if isinstance(name, str) and not os.path.exists(os.path.expanduser(name)):
                yield "dataset", name
            return
        for key, value in config.items():
            if key != "_target_":  # class paths look like owner/name only by accident
                yield from hub_ids(value, in_datasets or str(key).endswith("datasets"))
    elif isinstance(config, list):
        for value in config:
            yield from hub_ids(value, in_datasets)
    elif isinstance(config, str) and _HUB_ID.match(config) and not os.path.exists(os.path.expanduser(config)):
        yield ("dataset" if in_datasets else "model"), config


def download_lines(config: dict) -> List[str]:
    """``huggingface-cli download`` lines for the model pool and task pool of a composed config, each id once."""
    found = dict.fromkeys(hub_ids({k: config.get(k) for k in ("modelpool", "taskpool")}))
    return [
        f"huggingface-cli download {'--repo-type dataset ' if kind == 'dataset' else ''}{name}" for kind, name in found
    ]


def main(argv: Optional[List[str]] = None) -> int:
    from .comparison.runner import Suite, composed_config

    parser = argparse.ArgumentParser(
        prog="fusion-bench-tinting-hub-ids", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", required=True, help="a suite name, as in modelpool=<suite>")
    parser.add_argument("--config-dir", action="append", default=[], help="extra Hydra config folder (repeatable)")
    args = parser.parse_args(argv)
    lines = download_lines(composed_config(Suite(args.suite, args.suite, list(args.config_dir))))
    print("\n".join(lines) if lines else f"# {args.suite} names no hub model or dataset: it runs offline as it is")
    return 0


if __name__ == "__main__":
    sys.exit(main())
