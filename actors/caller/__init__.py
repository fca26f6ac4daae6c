"""The caller (:mod:`.actor`); the reliability policy (:mod:`.policy`) and the upstream call
(:mod:`.upstream`, over the HTTP/1.1 transport in :mod:`._http1`), which the prober uses too."""

from omnillm.actors.caller.actor import CallerActor

__all__ = ["CallerActor"]
