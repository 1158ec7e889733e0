"""gRPC layer: thin servicers, the operation registry, and the one error path."""
