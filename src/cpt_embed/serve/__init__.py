"""The HTTP server: OpenAI-compatible embeddings, search, health, metrics, a search page."""
