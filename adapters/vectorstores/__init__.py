"""Vector store adapters behind ``application.ports.VectorStore``: pgvector (the default),
Milvus (milvus-lite embedded or a server), Qdrant (local mode or a server), Weaviate, Pinecone,
an in-memory reference store, a Redis read cache and a tenant-hash shard router. Import the
module you need; nothing is imported here (each pulls in its own SDK)."""
