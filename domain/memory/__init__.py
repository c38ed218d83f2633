"""Memory: vectors and their filters (the memory graph and its ranking live beside them)."""
