"""The classifier actor (:mod:`.actor`) and its feature extractors (:mod:`._features`)."""

from omnillm.actors.classifier.actor import ClassifierActor, classify

__all__ = ["ClassifierActor", "classify"]
