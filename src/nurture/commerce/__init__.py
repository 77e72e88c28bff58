"""Commerce: purchases become orders, contacts carry RFM figures, order CSVs are imported, and
product recommendations are computed.

May import ``intake``, ``contacts``, ``jobs``, ``storage`` and the pure layers (``analytics``
computes RFM and recommendations).
"""
