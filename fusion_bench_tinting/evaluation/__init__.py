"""Task-aware evaluation: FusionBench's CLIP, OpenCLIP and GPT-2 task pools and a GLUE task pool that switch
a per-task model (Model Tinting, EMR-Merging, any ``ModulatedModel``) to each task before evaluating it, with
the paper's metrics and the expected calibration error."""
