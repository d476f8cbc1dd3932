"""Model pools for suites FusionBench 0.2.33 has no working pool for.

``SequenceClassificationEncoderPool`` follows the design of FusionBench's GPT-2 GLUE pool for any
``*ForSequenceClassification`` checkpoints (RoBERTa, BERT, ...): ``load_model`` gives the *encoder*
(what merging methods merge; every task's has the same shapes even when their heads differ, e.g.
STS-B's single output) and ``load_classifier`` gives the whole fine-tuned classifier with its head, so
that FusionBench's own merging methods (Task Arithmetic, TIES, EMR, ...) and ours run on the same pool
and the task pool evaluates each task with its own head.
"""

from __future__ import annotations

from torch import nn

from fusion_bench.modelpool import SequenceClassificationModelPool


class SequenceClassificationEncoderPool(SequenceClassificationModelPool):
    def load_classifier(self, name: str, *args, **kwargs) -> nn.Module:
        """The whole fine-tuned classifier (encoder and head) of ``name``."""
        return super().load_model(name, *args, **kwargs)

    def load_model(self, name, *args, **kwargs) -> nn.Module:
        """The encoder (base model) of ``name``'s classifier."""
        classifier = self.load_classifier(name, *args, **kwargs)
        return getattr(classifier, classifier.base_model_prefix)

    def save_model(self, model: nn.Module, path: str, **kwargs) -> None:
        model.save_pretrained(path)
