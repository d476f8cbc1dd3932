"""How the offline builders cut a task's shuffled samples into test, fine-tuning and adaptation splits.

Test comes first and fine-tuning (train) next, as in the builds before the adaptation split existed, so a
large source keeps its test and train sets; the adaptation split (``val`` in the model pools), as large as
the test split, is what follows train, or, for a source too small for all three, the last ``test_size``
samples, taken from the end of train. The three never share a sample.
"""

from __future__ import annotations

from typing import Tuple


def disjoint_splits(count: int, test_size: int, train_size: int) -> Tuple[slice, slice, slice]:
    """Slices (test, train, adaptation) of ``count`` shuffled samples; ValueError when they do not fit."""
    rest = count - test_size
    if rest >= train_size + test_size:
        train = slice(test_size, test_size + train_size)
        adaptation = slice(test_size + train_size, test_size + train_size + test_size)
    else:
        train, adaptation = slice(test_size, count - test_size), slice(count - test_size, count)
    if test_size <= 0 or train.stop - train.start < min(train_size, 100):
        raise ValueError(
            f"not enough samples ({count}) for {test_size} test, {test_size} adaptation and {train_size} train samples"
        )
    return slice(0, test_size), train, adaptation
