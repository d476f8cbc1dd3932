"""Sequence classification: metrics, the encoder/head split, tokenized inputs, and the methods on tiny
RoBERTa and GPT-2 suites built with the real transformers classes."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import build_tinting, cpu_fabric, run_cli, run_cli_subprocess
from fusion_bench.utils import instantiate
from omegaconf import OmegaConf

from fusion_bench_tinting.core.errors import TintingConfigError
from fusion_bench_tinting.core.families import family_for
from fusion_bench_tinting.families.text_metrics import average_scores, compute_metrics, expected_calibration_error
from fusion_bench_tinting.families.token_inputs import TokenInputs


def _pool(root, suite):
    import fusion_bench_tinting  # noqa: F401

    return instantiate(OmegaConf.load(root / "config" / "modelpool" / f"{suite}.yaml"), _recursive_=False)


def _run(pool, **options):
    options.setdefault("max_steps", 3)
    algorithm = build_tinting(**options)
    algorithm.fabric = cpu_fabric()
    return algorithm.run(pool)


# ----- metrics --------------------------------------------------------------------------------
def test_metrics_against_hand_computed_values():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0], [0.5, 0.0]])
    labels = torch.tensor([0, 1, 1, 1, 0])  # predictions 0, 1, 0, 1, 0: TP=2 TN=2 FP=0 FN=1
    mrpc = compute_metrics("mrpc", logits, labels)
    assert mrpc["metric"] == "accuracy" and mrpc["score"] == pytest.approx(0.8)
    assert mrpc["f1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    mcc = (2 * 2 - 0 * 1) / ((2 + 0) * (2 + 1) * (2 + 0) * (2 + 1)) ** 0.5
    cola = compute_metrics("cola", logits, labels)
    assert cola["metric"] == "matthews_correlation" and cola["score"] == pytest.approx(mcc, abs=1e-6)
    assert "f1" not in cola

    predictions = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    targets = torch.tensor([1.0, 3.0, 2.0, 5.0])
    stsb = compute_metrics("stsb", predictions, targets)
    x, y = predictions[:, 0], targets
    pearson = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()).norm() * (y - y.mean()).norm()))
    spearman = 1 - 6 * (0 + 1 + 1 + 0) / (4 * (16 - 1))  # rank differences 0, 1, 1, 0
    assert stsb["pearson"] == pytest.approx(pearson, abs=1e-6)
    assert stsb["spearman"] == pytest.approx(spearman, abs=1e-6)
    assert stsb["score"] == pytest.approx((pearson + spearman) / 2, abs=1e-6)
    assert "ece" in cola and "ece" not in stsb  # calibration is a classification metric
    assert average_scores({"cola": cola, "stsb": stsb}) == {
        "score": pytest.approx((cola["score"] + stsb["score"]) / 2),
        "accuracy": pytest.approx(cola["accuracy"]),
        "ece": pytest.approx(cola["ece"]),
    }


def test_expected_calibration_error_against_a_hand_computed_value():
    """15 equal-width bins of the top-class probability; sample-weighted |accuracy - confidence| per bin."""
    probabilities = torch.tensor([[0.95, 0.03, 0.02], [0.95, 0.03, 0.02], [0.2, 0.7, 0.1], [0.25, 0.2, 0.55]])
    labels = torch.tensor([0, 1, 1, 0])  # right, wrong (both at 0.95), right at 0.7, wrong at 0.55
    # bins (14/15, 1]: accuracy 1/2, confidence 0.95; (10/15, 11/15]: 1 vs 0.7; (8/15, 9/15]: 0 vs 0.55
    expected = 2 / 4 * abs(0.5 - 0.95) + 1 / 4 * abs(1 - 0.7) + 1 / 4 * abs(0 - 0.55)
    assert expected_calibration_error(probabilities.log(), labels) == pytest.approx(expected, abs=1e-6)
    assert compute_metrics("sst2", probabilities.log(), labels)["ece"] == pytest.approx(expected, abs=1e-6)


# ----- inputs and the encoder/head split --------------------------------------------------------
def test_token_inputs_cut_each_batch_to_its_longest_sequence():
    rows = [
        {"input_ids": [5, 6, 7, 0, 0], "attention_mask": [1, 1, 1, 0, 0]},
        {"input_ids": [8, 0, 0, 0, 0], "attention_mask": [1, 0, 0, 0, 0]},
        {"input_ids": [9, 9, 0, 0, 0], "attention_mask": [1, 1, 0, 0, 0]},
    ]
    inputs = TokenInputs.from_rows(rows, pad_token_id=0)
    assert inputs.columns["input_ids"].shape == (3, 3)
    batch = inputs.gather(torch.tensor([1, 2]), torch.device("cpu"))
    assert batch["input_ids"].tolist() == [[8, 0], [9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 0], [1, 1]]
    assert [b["input_ids"].shape[1] for b in inputs.batches(2, torch.device("cpu"))] == [3, 2]


@pytest.mark.parametrize("suite", ["tiny-roberta_glue", "tiny-gpt2_glue"])
def test_family_head_on_features_equals_the_classifiers_own_forward(tiny_text, suite):
    pool = _pool(tiny_text, suite)
    family = family_for(pool, cpu_fabric())
    task = pool.model_names[0]
    encoder, head = family.load_encoder(task), family.load_head(task)
    inputs = family.adaptation_inputs(task, batch_size=32, num_workers=0, dtype=torch.float32)
    batch = inputs.gather(torch.arange(8), torch.device("cpu"))
    from fusion_bench_tinting.families.sequence_classification import load_classifier

    classifier = load_classifier(pool, task).eval()
    with torch.no_grad():
        expected = classifier(**batch).logits
        actual = head(family.encode(encoder, batch))
    assert torch.allclose(actual, expected, atol=1e-5)


def test_bert_layout_matches_bert_forward():
    from transformers import BertConfig, BertForSequenceClassification

    from fusion_bench_tinting.families.sequence_classification import layout_for

    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=3,
        )
    ).eval()
    batch = {"input_ids": torch.randint(1, 50, (4, 7)), "attention_mask": torch.ones(4, 7, dtype=torch.long)}
    layout = layout_for("bert")
    with torch.no_grad():
        actual = getattr(model, layout.head_attribute)(layout.features(model.bert(**batch), batch))
        assert torch.allclose(actual, model(**batch).logits, atol=1e-6)


# ----- the methods ------------------------------------------------------------------------------
def test_tinting_on_tiny_roberta_with_a_regression_task(tiny_text, tmp_path):
    report = run_cli(
        [
            "--config-dir",
            str(tiny_text / "config"),
            "method=model_tinting_plusplus",
            "modelpool=tiny-roberta_glue",
            "method.max_steps=20",
        ],
        tmp_path / "log",
    )
    assert report["cola"]["metric"] == "matthews_correlation"
    assert report["stsb"]["metric"] == "pearson_spearman" and "pearson" in report["stsb"]
    assert report["sst2"]["metric"] == "accuracy"
    scores = [report[t]["score"] for t in ("sst2", "cola", "stsb")]
    assert report["average"]["score"] == pytest.approx(sum(scores) / 3)
    extras = report["adaptation"]
    assert extras["lr"] == 0.0005  # the NLP default
    assert extras["filter_dropped_fraction"]["stsb"] == 0.0  # regression: plain loss on every sample
    assert extras["optimizer_steps"] == 60


def test_baselines_run_on_the_encoder_pool_with_per_task_heads(tiny_text, tmp_path):
    config = ["--config-dir", str(tiny_text / "config"), "modelpool=tiny-roberta_glue", "taskpool=tiny-roberta_glue"]
    individual = run_cli([*config, "method=individual"], tmp_path / "individual")
    task_arithmetic = run_cli([*config, "method=task_arithmetic"], tmp_path / "ta")
    tinting = run_cli([*config, "method=model_tinting", "method.max_steps=100", "method.lr=0.005"], tmp_path / "mt")
    assert individual["average"]["score"] > task_arithmetic["average"]["score"]
    assert tinting["average"]["score"] > task_arithmetic["average"]["score"]


@pytest.mark.slow
def test_gpt2_suite_with_fusion_bench_task_pool_subprocess(tiny_text, tmp_path):
    """FusionBench's own GPT-2 GLUE task pool class is selected; the run upgrades it so that each task
    is evaluated with its tinted head."""
    log_dir = tmp_path / "log"
    run_cli_subprocess(
        [
            "--config-dir",
            str(tiny_text / "config"),
            "method=model_tinting",
            "modelpool=tiny-gpt2_glue",
            "taskpool=tiny-gpt2_glue",
            "method.max_steps=5",
        ],
        log_dir,
    )
    report = json.loads((log_dir / "program_report.json").read_text())
    assert {"sst2", "cola"} <= set(report) and report["adaptation"]["method"] == "model_tinting"


def test_block_tinting_on_text(tiny_text):
    model = _run(_pool(tiny_text, "tiny-roberta_glue"), tinted_layer=1)
    assert all(n.startswith("encoder.layer.1.") for n in model.modulators["cola"].block_names)
    gpt2 = _run(_pool(tiny_text, "tiny-gpt2_glue"), tinted_layer=0)
    assert all(n.startswith("h.0.") for n in gpt2.modulators["sst2"].block_names)


# ----- BERT: the pooler belongs to the task's head ---------------------------------------------
POOLER = ["pooler.dense.weight", "pooler.dense.bias"]


def _bert_classifiers(pool):
    from fusion_bench_tinting.families.sequence_classification import load_classifier

    return {task: load_classifier(pool, task) for task in ("sst2", "cola")}


def test_bert_head_holds_each_tasks_pooler_and_the_merge_leaves_it_out(tiny_text):
    from fusion_bench_tinting.families.sequence_classification import task_classifier

    pool = _pool(tiny_text, "tiny-bert_glue")
    finetuned = _bert_classifiers(pool)
    pretrained_pooler = pool.load_model("_pretrained_").pooler.dense.weight.detach().clone()
    model = _run(pool, max_steps=0)  # the initial merge: each task's pooler is its fine-tuned one
    for task, classifier in finetuned.items():
        assert model.modulators[task].block_names == POOLER
        own = model.modulators[task].block_state()["pooler.dense.weight"]
        assert torch.equal(own, classifier.bert.pooler.dense.weight)
    # the merged encoder keeps the pretrained pooler; set_task swaps the task's own in
    assert torch.equal(model.backbone.pooler.dense.weight, pretrained_pooler)
    batch = {
        "input_ids": torch.tensor([[2, 7, 30, 12, 3], [2, 25, 9, 3, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]),
    }
    for task, classifier in finetuned.items():
        evaluated = task_classifier(pool, task, model)
        assert torch.equal(model.backbone.pooler.dense.weight, classifier.bert.pooler.dense.weight)
        # by hand: the merged encoder body, the task's own pooler and classifier
        merged = {n: p for n, p in model.backbone.named_parameters() if not n.startswith("pooler.")}
        reference = _bert_classifiers(pool)[task].eval()
        reference.bert.load_state_dict(merged, strict=False)
        with torch.no_grad():
            assert torch.allclose(evaluated(**batch).logits, reference(**batch).logits, atol=1e-6)

    trained = _run(_pool(tiny_text, "tiny-bert_glue"), max_steps=3)
    for task, classifier in finetuned.items():  # the pooler is tinted with the classifier
        assert not torch.equal(
            trained.modulators[task].block_state()["pooler.dense.weight"], classifier.bert.pooler.dense.weight
        )


def test_bert_pooler_merged_keeps_the_classifier_alone_as_head(tiny_text):
    pool = _pool(tiny_text, "tiny-bert_glue")
    pretrained_pooler = pool.load_model("_pretrained_").pooler.dense.weight.detach().clone()
    model = _run(pool, max_steps=0, head_projection="merged")
    assert all(model.modulators[t].block_names == [] for t in ("sst2", "cola"))
    assert not torch.equal(model.backbone.pooler.dense.weight, pretrained_pooler)  # merged like the rest
    assert set(model.modulators["sst2"].tinted_state()) == {"head.weight", "head.bias"}


def test_bert_pooler_head_saves_and_loads_to_the_same_scores(tiny_text, tmp_path):
    config = ["--config-dir", str(tiny_text / "config"), "modelpool=tiny-bert_glue", "method=model_tinting"]
    first = run_cli([*config, "method.max_steps=5"], tmp_path / "adapted")
    again = run_cli([*config, f"method.weights={tmp_path / 'adapted'}"], tmp_path / "loaded")
    assert [again[t]["score"] for t in ("sst2", "cola")] == [first[t]["score"] for t in ("sst2", "cola")]
    with pytest.raises(AssertionError, match="exited with 2"):  # the saved head holds a pooler: refused
        run_cli([*config, f"method.weights={tmp_path / 'adapted'}", "method.head_projection=merged"], tmp_path / "x")


def test_head_projection_rejects_a_bad_value(tiny_text):
    with pytest.raises(TintingConfigError, match="head_projection=.*own"):
        _run(_pool(tiny_text, "tiny-bert_glue"), head_projection="pooler")


# ----- bad input --------------------------------------------------------------------------------
def test_classification_only_loss_with_a_regression_task_is_refused(tiny_text):
    with pytest.raises(TintingConfigError, match=r"loss='kl' needs class probabilities, but \['stsb'\]"):
        _run(_pool(tiny_text, "tiny-roberta_glue"), loss="kl")


def test_checkpoint_label_count_differing_from_the_data_is_refused(tiny_text, tmp_path):
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    three_classes = Dataset.from_dict(
        {"input_ids": [[0, 5, 2]], "attention_mask": [[1, 1, 1]], "label": [2]},
        features=Features(
            {
                "input_ids": Sequence(Value("int64")),
                "attention_mask": Sequence(Value("int64")),
                "label": ClassLabel(num_classes=3),
            }
        ),
    )
    three_classes.save_to_disk(str(tmp_path / "three"))
    pool = _pool(tiny_text, "tiny-roberta_glue")
    pool._test_datasets["cola"]["dataset_path"] = str(tmp_path / "three")
    with pytest.raises(TintingConfigError, match="task 'cola' predicts 2 labels but the task's data has 3"):
        _run(pool)


def test_text_labels_outside_the_heads_classes_are_refused_before_adaptation(tiny_text, tmp_path):
    from datasets import Dataset

    Dataset.from_dict(
        {"input_ids": [[0, 5, 2], [0, 6, 2]], "attention_mask": [[1, 1, 1]] * 2, "label": [0, 5]}
    ).save_to_disk(str(tmp_path / "undeclared"))
    pool = _pool(tiny_text, "tiny-roberta_glue")
    pool._test_datasets["cola"]["dataset_path"] = str(tmp_path / "undeclared")
    with pytest.raises(TintingConfigError, match=r"task 'cola' .* has labels 0..5, but the task's head has 2 classes"):
        _run(pool)


def test_a_suite_not_built_yet_says_how_to_build_it(tiny_text, tmp_path):
    pool = _pool(tiny_text, "tiny-roberta_glue")
    pool._models["cola"]["pretrained_model_name_or_path"] = str(tmp_path / "not_built" / "cola")
    pool._test_datasets["cola"]["dataset_path"] = str(tmp_path / "not_built" / "data")
    with pytest.raises(TintingConfigError, match=r"checkpoint of task 'cola' does not exist: .* build it first"):
        _run(pool)


def test_checkpoint_with_another_tokenizer_is_refused(tiny_text, tmp_path):
    from fusion_bench_tinting.testing.tiny_text import tiny_tokenizer

    pool = _pool(tiny_text, "tiny-roberta_glue")
    copy = tmp_path / "sst2"
    shutil.copytree(pool._models["sst2"]["pretrained_model_name_or_path"], copy)
    tiny_tokenizer("gpt2").save_pretrained(copy)
    pool._models["sst2"]["pretrained_model_name_or_path"] = str(copy)
    with pytest.raises(TintingConfigError, match="task 'sst2' ships a tokenizer whose vocabulary differs"):
        _run(pool)


def test_unknown_glue_task_is_refused():
    from fusion_bench_tinting.families.text_data import load_glue

    with pytest.raises(TintingConfigError, match="GLUE has no task 'mnli-mm'; the tasks are"):
        load_glue("mnli-mm", tokenizer=None)


def test_missing_local_checkpoint_names_the_builder(tiny_text):
    pool = _pool(tiny_text, "tiny-roberta_glue")
    pool._models["cola"]["pretrained_model_name_or_path"] = "./nowhere/cola"
    with pytest.raises(TintingConfigError, match="checkpoint of task 'cola' does not exist.*build_minilm_text"):
        _run(pool)


def test_roberta_glue_suite_configs_compose():
    from hydra import compose, initialize_config_dir

    from hydra_plugins.fusion_bench_tinting.search_path import fusion_bench_config_dir

    with initialize_config_dir(config_dir=str(fusion_bench_config_dir()), version_base=None):
        cfg = compose("fabric_model_fusion", overrides=["modelpool=roberta-base_glue", "taskpool=roberta-base_glue"])
    modelpool = OmegaConf.to_container(cfg.modelpool, resolve=True)
    tasks = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"]
    assert list(modelpool["models"]) == ["_pretrained_", *tasks]
    assert modelpool["models"]["mnli"]["subfolder"] == "mnli/roberta-base_lr1e-05"
    assert {t: d["max_length"] for t, d in modelpool["test_datasets"].items()} == {t: 128 for t in tasks}
    assert cfg.taskpool._target_ == "fusion_bench_tinting.families.text_taskpool.SequenceClassificationTaskPool"
