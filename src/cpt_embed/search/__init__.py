"""Semantic search over files: chunking, a FAISS + SQLite index on disk, queries."""
