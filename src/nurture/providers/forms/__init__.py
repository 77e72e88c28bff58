"""forms provider."""
