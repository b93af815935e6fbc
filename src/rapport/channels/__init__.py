"""Channels: the ways Rapport reaches a customer (see ``rapport.channels.base``)."""
