"""The bus: messages, subjects, the connection, handoffs and the stream protocol."""

__all__: list[str] = []
