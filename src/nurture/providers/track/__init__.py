"""``/webhooks/track``: canonical events from a site's backend (signed) or browser (write key)."""
