"""kxform's own serving fronts: HTTP (ASGI on uvicorn) and gRPC (grpc.aio)."""
