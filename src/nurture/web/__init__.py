"""HTTP: app factory, webhooks, admin API, pages, health and metrics. Errors become statuses
here only. An edge: may import ``bootstrap`` (the ``Container``), features, storage and
providers; only ``cli`` and ``testing`` import it."""
