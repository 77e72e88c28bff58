"""Discord: incoming webhook messages."""
