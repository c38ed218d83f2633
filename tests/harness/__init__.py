"""Test infrastructure: ``services`` starts (or finds) Postgres, NATS and Redis for a test session;
``jetstream`` gives tests names that do not collide on a shared NATS server."""
