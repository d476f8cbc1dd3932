"""Whether the inputs the adaptation reads are the ones the task pool scores (:class:`OverlapWarningMixin`).

The paper adapts on the unlabelled test inputs it then scores (transductive, as AdaMerging). With
``adaptation_data=val`` or ``train`` the method adapts on another split of the model pool while the task
pool still scores the test split (inductive): the score then says how the merged model does on inputs it
has not seen. An adaptation split that shares inputs with the test split is reported, with how many.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Optional, Set

from .core.input_checks import reading, source_in_pool

log = logging.getLogger(__name__)

#: label-like columns left out when two splits' inputs are compared
LABEL_COLUMNS = {"label", "labels", "idx"}
#: rows turned into Python objects at a time (a large image split is never held twice in memory)
CHUNK_ROWS = 1024


def input_hashes(dataset: Any) -> Optional[Set[str]]:
    """A hash of each row's inputs (every column but the labels, as stored: images undecoded) of a Hugging
    Face dataset; None for other datasets, whose rows cannot be read without decoding them."""
    dataset = getattr(dataset, "dataset", dataset)  # FusionBench wraps HF datasets in its image datasets
    if not callable(getattr(dataset, "with_format", None)):
        return None
    table = dataset.with_format("arrow")[:]  # the rows as stored (after any selection), nothing decoded
    columns = [c for c in table.column_names if c not in LABEL_COLUMNS]
    if not columns:
        return None
    table = table.select(columns)
    return {
        hashlib.blake2b(repr(row).encode(), digest_size=16).hexdigest()
        for start in range(0, table.num_rows, CHUNK_ROWS)
        for row in table.slice(start, CHUNK_ROWS).to_pylist()
    }


def warn_about_overlap(task: str, split: str, adaptation_dataset: Any, test_dataset: Any) -> Optional[int]:
    """Warn when the ``split`` inputs of ``task`` include test inputs; return how many do (None: not comparable)."""
    adaptation, test = input_hashes(adaptation_dataset), input_hashes(test_dataset)
    if adaptation is None or test is None:
        return None
    shared = len(adaptation & test)
    if shared:
        log.warning(
            "Task %s: %d of the %d adaptation inputs (method.adaptation_data=%s) are also test inputs: on those the "
            "score is transductive, not a measure of unseen inputs.",
            task,
            shared,
            len(adaptation),
            split,
        )
    return shared


class OverlapWarningMixin:
    """Model Tinting that, adapting on another split than ``test``, warns of the test inputs it contains."""

    def _plan(self, family: Any, start: Any) -> Any:
        plan = super()._plan(family, start)
        split, modelpool = self.adaptation_data, family.modelpool
        if split == "test":  # the paper's protocol: the overlap is the whole split, by design
            return plan
        for task in [t for t in plan.tasks if t in modelpool.test_dataset_names]:
            with reading(f"the test set of task {task!r} ({source_in_pool(modelpool, task, 'test')})"):
                warn_about_overlap(task, split, family.adaptation_dataset(task), modelpool.load_test_dataset(task))
        return plan
