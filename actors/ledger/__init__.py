"""The ledger actor (:mod:`.actor`) and its SQLite store (:mod:`.store`), which the planner's
estimates and ``omni cost``/``omni stats`` read too."""

from omnillm.actors.ledger.actor import LedgerActor

__all__ = ["LedgerActor"]
