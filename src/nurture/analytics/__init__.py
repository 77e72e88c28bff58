"""Vectorised analytics over the order history: RFM and recommendations."""
