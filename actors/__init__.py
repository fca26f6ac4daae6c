"""The actors: each owns one job on the bus and satisfies :class:`~omnillm.actors.base.Actor`.

- :mod:`.classifier`: sorts a request into a tier and its needs, hands it to a planner;
- :mod:`.planner`: the cost estimator, an ordered fallback chain, the first hop;
- :mod:`.caller`: one pool per provider, the upstream call, tokens to the client;
- :mod:`.gateway`: the HTTP edge (OpenAI chat completions) onto the bus;
- :mod:`.ledger`: usage from JetStream into the store, cost and stats on request;
- :mod:`.admin`: answers the admin subjects (providers, models, switch);
- :mod:`.prober`: health from outcomes and probes, into the ``omni_health`` bucket.

An actor with private helpers is a package holding them; shared pieces sit here:
:mod:`.base` (the protocol and the pool every subscriber runs), :mod:`.boards` (the KV
boards an actor reads and writes) and :mod:`._dispatch` (handing an envelope on).
"""

__all__: list[str] = []
