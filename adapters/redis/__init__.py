"""Redis adapters: state shared across replicas (circuit breakers, budget reservations, rate limits)."""
