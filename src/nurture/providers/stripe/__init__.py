"""stripe provider."""
