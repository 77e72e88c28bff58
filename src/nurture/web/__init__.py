"""HTTP: app factory, webhooks, admin API, health and metrics. Errors become statuses here only."""
