"""Actors: classifier, planner, caller; each has ``run(*, task_status)``."""

__all__: list[str] = []
