"""Integrations: what leaves nurture for other systems: signed outbound webhooks to named
endpoints (Power Automate, Zapier, n8n, Discord, Slack), the Notion mirror, and tasks.

May import ``messaging`` (templates, rate limits), ``intake``, ``contacts``, ``jobs``,
``storage``, ``providers`` and the pure layers.
"""
