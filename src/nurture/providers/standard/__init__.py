"""standard provider."""
