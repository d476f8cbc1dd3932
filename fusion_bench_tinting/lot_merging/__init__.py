"""LOT Merging (Layer-wise Optimal Task vector merging, arXiv 2505.23859) as a FusionBench method, on Model
Tinting's families and closed-form solver (``..core.lot``); FusionBench's ``fusion_bench/method/lot_merging``."""

from .algorithm import LOTMergingAlgorithm

__all__ = ["LOTMergingAlgorithm"]
