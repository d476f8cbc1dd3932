"""Tests of Model Tinting in FusionBench's own style (``unittest``), written by the export to
``tests/test_model_tinting.py`` of FusionBench's tree and run there without the plugin installed."""

import unittest

import torch
import torch.nn as nn
from fusion_bench.method import LOTMergingAlgorithm, ModelTintingAlgorithm, ModelTintingPlusPlus
from fusion_bench.method.model_tinting.errors import TintingConfigError
from fusion_bench.method.model_tinting.losses import confidence_filter, per_sample_loss
from fusion_bench.method.model_tinting.merging import LayerWiseMerger
from fusion_bench.method.model_tinting.tinted_model import TintedModel, TintModulator


class TestModelTintingOptions(unittest.TestCase):
    def test_defaults_are_the_paper_and_plusplus_filters(self):
        self.assertFalse(ModelTintingAlgorithm().confidence_filter)
        self.assertTrue(ModelTintingPlusPlus().confidence_filter)

    def test_unknown_option_is_refused_naming_the_closest(self):
        with self.assertRaisesRegex(TintingConfigError, "max_step.*max_steps"):
            ModelTintingAlgorithm(max_step=20)
        with self.assertRaisesRegex(TintingConfigError, "num_sample.*num_samples"):
            LOTMergingAlgorithm(num_sample=8)

    def test_bad_value_is_refused_in_one_line(self):
        with self.assertRaises(TintingConfigError) as raised:
            ModelTintingAlgorithm(batch_size=0)
        self.assertIn("batch_size", str(raised.exception))
        self.assertEqual(len(str(raised.exception).splitlines()), 1)


class TestLayerWiseMerger(unittest.TestCase):
    def test_merge_is_pretrained_plus_weighted_task_vectors(self):
        torch.manual_seed(0)
        pretrained = {"w": torch.randn(3, 2), "b": torch.randn(3)}
        finetuned = [{k: v + torch.randn_like(v) for k, v in pretrained.items()} for _ in range(2)]
        merger = LayerWiseMerger(pretrained, 2, init_value=0.3)
        for index, weights in enumerate(finetuned):
            merger.set_task_vector(index, weights)
        merger.check_complete()
        with torch.no_grad():
            merger.coefficients.copy_(torch.tensor([[0.2, 0.5], [0.7, 0.1]]))
        merged = merger()
        for column, name in enumerate(merger.group_names):
            expected = pretrained[name] + sum(
                merger.coefficients[k, column] * (finetuned[k][name] - pretrained[name]) for k in range(2)
            )
            self.assertTrue(torch.allclose(merged[name], expected, atol=1e-6))


class TestLosses(unittest.TestCase):
    def test_cross_entropy_against_the_teacher_label(self):
        student = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        teacher = torch.tensor([[0.0, 5.0], [0.0, 5.0]])
        expected = nn.functional.cross_entropy(student, torch.tensor([1, 1]), reduction="none")
        self.assertTrue(torch.allclose(per_sample_loss("ce", student, teacher), expected))

    def test_plusplus_drops_confident_disagreement_only(self):
        teacher = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
        student = torch.tensor([[5.0, 0.0], [0.2, 0.0], [0.0, 5.0]])  # confident wrong, unsure wrong, agrees
        self.assertEqual(confidence_filter(student, teacher).tolist(), [False, True, True])


class TestTintedModel(unittest.TestCase):
    def test_each_task_gets_its_own_head(self):
        heads = {task: nn.Linear(4, 2) for task in ("a", "b")}
        model = TintedModel(nn.Identity(), {t: TintModulator(head=h) for t, h in heads.items()}, report={})
        self.assertIs(model.task_head("a"), heads["a"])
        self.assertIs(model.task_head("b"), heads["b"])


if __name__ == "__main__":
    unittest.main()
