"""How far apart the tiny NYUv2 suite's teachers, their Task Arithmetic merge and Model Tinting are, per build seed.

The NYUv2 test asserts that Model Tinting beats the Task Arithmetic start on every task; that only means
something (and only holds whatever the machine's floating point) when each fine-tuned teacher is clearly
better than the merge. This prints, per seed, each task's metric for the teacher alone, for the start
(Task Arithmetic at 0.3 with each task's fine-tuned decoder) and after Model Tinting, through the CLI.

    python scripts/tiny_nyuv2_margins.py --seeds 0 1 2 3 --steps 15 --out /tmp/tiny_nyuv2_margins
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path
from typing import Dict

import torch
from omegaconf import OmegaConf

from fusion_bench_tinting.testing.tiny_nyuv2 import SUITE, TASKS, TinyNYUv2Spec, build_tiny_nyuv2, torch_home

METRICS = {"segmentation": "val/segmentation_mIoU", "depth": "val/depth_abs_err", "normal": "val/normal_mean"}


def teacher_scores(out: Path) -> Dict[str, float]:
    """Each task's fine-tuned model alone, through FusionBench's NYUv2 Lightning module."""
    import lightning as L
    from fusion_bench.dataset.nyuv2 import NYUv2
    from fusion_bench.modelpool.nyuv2_modelpool import NYUv2ModelPool
    from fusion_bench.models.nyuv2.lightning_module import NYUv2MTLModule

    pool = NYUv2ModelPool(OmegaConf.load(out / "config" / "modelpool" / f"{SUITE}.yaml").models)
    loader = torch.utils.data.DataLoader(NYUv2(root=str(out / "data" / "nyuv2"), train=False), batch_size=4)
    trainer = L.Trainer(devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    scores = {}
    for task in TASKS:
        model = pool.load_model(task, encoder_only=False)
        module = NYUv2MTLModule(model.encoder, model.decoders, tasks=[task], task_weights=[1])
        scores[task] = trainer.validate(module, loader, verbose=False)[0][METRICS[task]]
    return scores


def cli_scores(out: Path, steps: int, log_dir: Path) -> Dict[str, float]:
    command = [
        "fusion_bench",
        "--config-dir",
        str(out / "config"),
        f"+suite={SUITE}",
        "method=model_tinting",
        f"method.max_steps={steps}",
        "fabric.accelerator=cpu",
        "print_config=false",
        f"path.log_dir={log_dir}",
    ]
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "TORCH_HOME": str(torch_home(out))})
    report = json.loads((log_dir / "program_report.json").read_text())
    return {task: report[key] for task, key in METRICS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--steps", type=int, default=15, help="Model Tinting iterations (the test's)")
    parser.add_argument("--out", type=Path, default=Path("tiny_nyuv2_margins"))
    args = parser.parse_args()
    print("| seed | task | teacher | Task Arithmetic start | Model Tinting |\n| --- | --- | --- | --- | --- |")
    for seed in args.seeds:
        out = (args.out / f"seed_{seed}").resolve()
        build_tiny_nyuv2(out, TinyNYUv2Spec(train_size=8, val_size=4, seed=seed))  # the test's sizes
        os.environ["TORCH_HOME"] = str(torch_home(out))
        teacher = teacher_scores(out)
        start, tinted = cli_scores(out, 0, out / "start"), cli_scores(out, args.steps, out / "mt")
        for task in TASKS:
            row = [seed, METRICS[task], *(f"{scores[task]:.3f}" for scores in (teacher, start, tinted))]
            print("| " + " | ".join(map(str, row)) + " |", flush=True)


if __name__ == "__main__":
    main()
