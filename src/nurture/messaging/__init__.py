"""Messaging: e-mail and SMS to contacts: rendering templates, the send under an idempotency
claim, unsubscribe links, provider rate limits, and delivery events (bounces, opens) fed back
onto the message and the contact.

May import ``intake``, ``contacts``, ``storage``, the channel ports in ``core`` and the pure
layers; channels themselves come from ``providers`` through the composition root.
"""
