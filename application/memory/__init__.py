"""Memory use cases: ``IngestTurns`` (store turns as episodic memories, with vectors, topics and
graph edges) and ``SearchMemory`` (hybrid retrieval, ranking and packing). Ports: ``ports``."""

from application.memory.ingest import IngestTurns, TurnInput
from application.memory.ports import MemoryRepository, StoredMemory
from application.memory.search import SearchMemory, SearchResponse, SearchResult

__all__ = [
    "IngestTurns",
    "MemoryRepository",
    "SearchMemory",
    "SearchResponse",
    "SearchResult",
    "StoredMemory",
    "TurnInput",
]
