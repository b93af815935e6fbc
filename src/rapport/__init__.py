"""Rapport: one-to-one customer conversations at scale."""

__version__ = "0.1.0"
