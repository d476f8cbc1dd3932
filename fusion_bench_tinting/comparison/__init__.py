"""Side-by-side comparison of Model Tinting with FusionBench's baselines on one suite."""
