"""Notion: the contact mirror's API client."""
