"""The HTTP gateway (:mod:`.actor`): gateway keys (:mod:`.keys`), OpenAI requests in
(:mod:`.openai_in`) and answers out (:mod:`.openai_out`), and the listening sockets with
their ``--workers`` steering (:mod:`.sockets`)."""

from omnillm.actors.gateway.actor import GatewayActor

__all__ = ["GatewayActor"]
