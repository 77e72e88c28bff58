"""One folder per vendor (vertical slices): verifying and parsing what it sends (``inbound``),
and implementing the channel ports of ``core.channels`` (``sender``, ``outbound``); ``signing``
is shared by all, ``recording`` holds the in-memory channels of dry runs and tests.

Imports only the pure layers (``core``, ``pack``, ``config``, ``errors``); never storage or a
feature. ``bootstrap/delivery.py`` picks which provider serves a port.
"""
