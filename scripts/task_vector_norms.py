"""How far each task's fine-tuning moved the encoder, per offline text suite (docs/minilm_levers.md, lever 6).

A merge is harder when the task vectors are long against the pretrained weights: prints, for each suite folder
built by ``build_minilm_text.py``, the L2 norm of every task's encoder task vector (the classifier, which has no
pretrained counterpart, left out) and that norm as a share of the pretrained encoder's norm::

    python scripts/task_vector_norms.py .cache/minilm_text .cache/minilm_text_strong
"""

import argparse
from pathlib import Path
from typing import Dict

import torch
from fusion_bench.utils.state_dict_arithmetic import state_dict_flatten, state_dict_sub
from safetensors.torch import load_file

WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


def encoder_weights(model_dir: Path, with_word_embeddings: bool) -> Dict[str, torch.Tensor]:
    """Floating-point weights of the encoder (not the classifier) saved in a model folder."""
    weights = load_file(str(model_dir / "model.safetensors"))
    return {
        name: tensor.double()
        for name, tensor in weights.items()
        if tensor.is_floating_point()
        and not name.startswith("classifier.")
        and (with_word_embeddings or not name.endswith(WORD_EMBEDDINGS))
    }


def suite_rows(suite_dir: Path, with_word_embeddings: bool):
    """(task, task-vector norm, share of the pretrained norm in %) for every task of a suite folder."""
    pretrained = encoder_weights(suite_dir / "models" / "pretrained", with_word_embeddings)
    base_norm = state_dict_flatten(pretrained).norm().item()
    for model_dir in sorted(p for p in (suite_dir / "models").iterdir() if p.name != "pretrained"):
        tuned = encoder_weights(model_dir, with_word_embeddings)
        norm = state_dict_flatten(state_dict_sub(tuned, pretrained)).norm().item()
        yield model_dir.name, norm, 100 * norm / base_norm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suites", nargs="+", type=Path, help="suite folders (e.g. .cache/minilm_text)")
    parser.add_argument("--with-word-embeddings", action="store_true", help="count the word embeddings too")
    args = parser.parse_args()
    print("| suite | task | task-vector norm | % of the pretrained encoder's norm |")
    print("|---|---|---:|---:|")
    for suite_dir in args.suites:
        for task, norm, share in suite_rows(suite_dir, args.with_word_embeddings):
            print(f"| {suite_dir.name} | {task} | {norm:.2f} | {share:.1f} |")


if __name__ == "__main__":
    main()
