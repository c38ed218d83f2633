"""The gRPC edge (grpc.aio): thin servicers, interceptors, health and reflection."""
