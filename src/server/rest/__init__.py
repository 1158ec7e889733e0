"""The HTTP/JSON projection of the operation registry (REST + server-sent events)."""
