"""The bus: messages, subjects, the connection, handoffs, admin requests and the stream
protocol."""

__all__: list[str] = []
