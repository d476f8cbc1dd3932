"""Tiny sequence classification suites (RoBERTa, BERT and GPT-2), built locally with the real classes.

Tasks are learnable synthetic stand-ins named after GLUE tasks so that GLUE's metric choices apply:
``sst2`` (binary, accuracy), ``cola`` (binary, Matthews correlation) and ``stsb`` (regression,
Pearson/Spearman). Sentences are drawn from small word lists; each copy of the model is really
fine-tuned on its task. The RoBERTa and BERT suites use FusionBench's ``SequenceClassificationModelPool`` and
our ``SequenceClassificationTaskPool``; the GPT-2 suite uses FusionBench's GPT-2 GLUE pool and task
pool classes (data padded to a fixed length, as FusionBench's GLUE loader does).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..suites import write_suite_config
from .tiny_suites import _yaml, byte_level_chars

POSITIVE = ["good", "great", "happy", "fine", "superb", "nice", "lovely", "bright"]
NEGATIVE = ["bad", "awful", "sad", "poor", "grim", "nasty", "dull", "gloomy"]
NEUTRAL = ["the", "a", "movie", "day", "car", "tree", "house", "book", "plan", "song"]
GRAMMAR = ["is", "was", "seems", "looks"]
MAX_LENGTH = 48


@dataclass
class TinyTextSpec:
    train_size: int = 256
    test_size: int = 96
    finetune_steps: int = 150
    finetune_lr: float = 3e-3
    seed: int = 0
    version: int = 3


def _sentence(rng: random.Random, task: str) -> Tuple[str, float]:
    words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 6))]
    if task == "sst2":  # sentiment: one polar word decides
        label = rng.randint(0, 1)
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
    elif task == "cola":  # "acceptability": a verb present or not
        label = rng.randint(0, 1)
        if label:
            words.insert(rng.randint(1, len(words)), rng.choice(GRAMMAR))
    else:  # stsb: score = 5 * share of positive among polar words
        polar = [rng.choice(POSITIVE + NEGATIVE) for _ in range(4)]
        label = 5.0 * sum(w in POSITIVE for w in polar) / len(polar)
        words += polar
        rng.shuffle(words)
    return " ".join(words), float(label)


def _byte_vocab(leading: List[str], trailing: List[str] = ()) -> Dict[str, int]:
    tokens = [*leading, *byte_level_chars(), *trailing]
    return {token: i for i, token in enumerate(tokens)}


def _bert_tokenizer():
    """A WordPiece tokenizer whose vocabulary is the suites' words."""
    from transformers import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *NEUTRAL, *GRAMMAR]
    return BertTokenizer(vocab={word: index for index, word in enumerate(words)})


def tiny_tokenizer(kind: str):
    from transformers import GPT2Tokenizer, RobertaTokenizer

    if kind == "bert":
        return _bert_tokenizer()
    if kind == "roberta":
        vocab = _byte_vocab(["<s>", "<pad>", "</s>", "<unk>"], ["<mask>"])  # RoBERTa's ids: <pad> = 1
        return RobertaTokenizer(vocab=vocab, merges=[])
    vocab = _byte_vocab([], ["<|endoftext|>"])
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=[])
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_classifier(kind: str, tokenizer, num_labels: int, seed: int):
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        GPT2Config,
        GPT2ForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    torch.manual_seed(seed)
    if kind == "bert":
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=MAX_LENGTH + 4,
            pad_token_id=tokenizer.pad_token_id,
            num_labels=num_labels,
        )
        return BertForSequenceClassification(config)
    if kind == "roberta":
        config = RobertaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=MAX_LENGTH + 4,
            type_vocab_size=1,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            num_labels=num_labels,
        )
        return RobertaForSequenceClassification(config)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=MAX_LENGTH,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=num_labels,
    )
    return GPT2ForSequenceClassification(config)


TASKS = {"roberta": {"sst2": 2, "cola": 2, "stsb": 1}, "gpt2": {"sst2": 2, "cola": 2}, "bert": {"sst2": 2, "cola": 2}}


def _dataset(tokenizer, task: str, size: int, seed: int, pad: bool):
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    rng = random.Random(seed)
    texts, labels = zip(*[_sentence(rng, task) for _ in range(size)])
    encoded = tokenizer(list(texts), truncation=True, max_length=MAX_LENGTH, padding="max_length" if pad else False)
    regression = TASKS["roberta"].get(task) == 1
    features = {name: Sequence(Value("int64")) for name in encoded}
    features["label"] = Value("float32") if regression else ClassLabel(num_classes=2)
    data = {**{k: list(v) for k, v in encoded.items()}, "label": [float(y) if regression else int(y) for y in labels]}
    return Dataset.from_dict(data, features=Features(features))


def _finetune(model, dataset, collate, steps: int, lr: float, seed: int, desc: str):
    generator = torch.Generator().manual_seed(seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    columns = ("input_ids", "attention_mask", "token_type_ids", "label")
    rows = dataset.select_columns([c for c in columns if c in dataset.column_names])
    for _ in tqdm(range(steps), desc=desc, leave=False):
        index = torch.randint(0, len(rows), (32,), generator=generator).tolist()
        batch = collate([rows[i] for i in index])
        labels = batch.pop("labels")
        logits = model(**batch).logits
        loss = F.mse_loss(logits[:, 0], labels.float()) if logits.shape[-1] == 1 else F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def build_tiny_text_suites(out, spec: TinyTextSpec = TinyTextSpec()) -> List[str]:
    """Build (or reuse) ``tiny-roberta_glue``, ``tiny-gpt2_glue`` and ``tiny-bert_glue`` under ``out``; return
    their names."""
    from transformers import DataCollatorWithPadding

    out = Path(out).resolve()
    stamp = out / "suite.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("spec") == asdict(spec):
        return json.loads(stamp.read_text())["suites"]
    if out.exists():
        shutil.rmtree(out)
    (out / "config" / "modelpool").mkdir(parents=True)
    (out / "config" / "taskpool").mkdir(parents=True)
    suites = []
    for kind, tasks in TASKS.items():
        tokenizer = tiny_tokenizer(kind)
        collate = DataCollatorWithPadding(tokenizer)
        root = out / kind
        tokenizer.save_pretrained(root / "tokenizer")
        pretrained = tiny_classifier(kind, tokenizer, num_labels=2, seed=spec.seed)
        pretrained.save_pretrained(root / "pretrained")
        models, data = {"_pretrained_": str(root / "pretrained")}, {}
        for index, (task, num_labels) in enumerate(tasks.items()):
            pad = kind == "gpt2"
            train = _dataset(tokenizer, task, spec.train_size, spec.seed * 100 + 2 * index, pad)
            test = _dataset(tokenizer, task, spec.test_size, spec.seed * 100 + 2 * index + 1, pad)
            test.save_to_disk(str(root / "data" / task))
            data[task] = {"_target_": "datasets.load_from_disk", "dataset_path": str(root / "data" / task)}
            model = tiny_classifier(kind, tokenizer, num_labels=num_labels, seed=spec.seed)
            model.load_state_dict(
                {k: v for k, v in pretrained.state_dict().items() if k.startswith(model.base_model_prefix)},
                strict=False,
            )
            _finetune(
                model,
                train,
                collate,
                spec.finetune_steps,
                spec.finetune_lr,
                spec.seed + index,
                f"fine-tune {kind} {task}",
            )
            model.save_pretrained(root / task)
            models[task] = str(root / task)
        suites.append(_write_configs(out, kind, root, models, data))
    stamp.write_text(json.dumps({"spec": asdict(spec), "suites": suites}, indent=2))
    return suites


def _write_configs(out: Path, kind: str, root: Path, models: Dict[str, str], data: Dict[str, dict]) -> str:
    name = f"tiny-{kind}_glue"
    if kind in ("roberta", "bert"):
        loader = "transformers.AutoModelForSequenceClassification.from_pretrained"
        tokenizer = {
            "_target_": "transformers.AutoTokenizer.from_pretrained",
            "pretrained_model_name_or_path": str(root / "tokenizer"),
        }
        modelpool = {
            "_target_": "fusion_bench_tinting.modelpools.SequenceClassificationEncoderPool",
            "_recursive_": False,
        }
        taskpool = {
            "_target_": "fusion_bench_tinting.families.text_taskpool.SequenceClassificationTaskPool",
            "_recursive_": False,
            "dataloader_kwargs": {"batch_size": 32},
        }
    else:
        loader = "transformers.GPT2Model.from_pretrained"
        tokenizer = {
            "_target_": "fusion_bench.modelpool.huggingface_gpt2_classification.load_gpt2_tokenizer",
            "pretrained_model_name_or_path": str(root / "tokenizer"),
        }
        modelpool = {"_target_": "fusion_bench.modelpool.HuggingFaceGPT2ClassificationPool"}
        # FusionBench's own GPT-2 GLUE task pool class (our methods upgrade it to the task-aware one)
        taskpool = {
            "_target_": "fusion_bench.taskpool.GPT2TextClassificationTaskPool",
            "dataloader_kwargs": {"batch_size": 32, "num_workers": 0},
            "fast_dev_run": False,
        }
    modelpool.update(
        {
            "models": {
                task: {"_target_": loader, "pretrained_model_name_or_path": path} for task, path in models.items()
            },
            "tokenizer": tokenizer,
            "test_datasets": data,
        }
    )
    taskpool.update({"test_datasets": {t: d for t, d in data.items()}, "tokenizer": tokenizer})
    (out / "config" / "modelpool" / f"{name}.yaml").write_text(_yaml(modelpool))
    (out / "config" / "taskpool" / f"{name}.yaml").write_text(_yaml(taskpool))
    write_suite_config(out / "config", name)
    return name
