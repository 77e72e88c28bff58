"""smtp provider."""
