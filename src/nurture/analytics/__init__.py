"""Pure analytics: the lead score and its explanation, RFM (vectorised), recommendations.

No I/O and no clock (``now`` is passed in). Imports only ``core``.
"""
