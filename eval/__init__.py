"""The classifier's evaluation set, ``prompts.jsonl``, and its scorer, ``eval.evaluate``."""

__all__: list[str] = []
