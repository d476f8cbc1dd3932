"""Write this plugin's methods as a FusionBench source tree (``python -m fusion_bench_tinting.upstream DIR``)."""
