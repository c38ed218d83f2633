"""The REST edge (Litestar): health, readiness, metrics, and the OpenAI-compatible chat endpoint."""
