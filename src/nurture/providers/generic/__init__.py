"""generic provider."""
