"""Slack: incoming webhook messages."""
