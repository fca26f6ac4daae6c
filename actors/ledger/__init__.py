"""The ledger actor (:mod:`.actor`) and its SQLite store (:mod:`.store`). The planner's
estimates and budgets and ``omni cost``/``omni stats`` ask it over the admin subjects
(:mod:`omnillm.bus.admin`)."""

from omnillm.actors.ledger.actor import LedgerActor

__all__ = ["LedgerActor"]
