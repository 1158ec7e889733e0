"""Domain services: the kernel's behaviour, free of gRPC and of generated code."""
