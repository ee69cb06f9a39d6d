"""Semantic search over files: chunking (chunks), the FAISS index (index), the manifest and
SQLite metadata beside it (store), building and updating (build), queries (query)."""
