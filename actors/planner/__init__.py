"""The planner, or cost estimator (:mod:`.actor`), with its budget guard (:mod:`._budget`)
and the ledger's observed token counts it plans with (:mod:`._estimates`)."""

from omnillm.actors.planner.actor import PlannerActor, plan

__all__ = ["PlannerActor", "plan"]
