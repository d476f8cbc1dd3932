"""Benchmarks (speed) that print ratios against FusionBench measured in the same run."""
