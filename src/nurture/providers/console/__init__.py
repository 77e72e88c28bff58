"""console provider."""
