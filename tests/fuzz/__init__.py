"""Attack tests that stay: hostile requests generated from the operation
registry and the protobuf descriptors, sent to a real server."""
