"""``rapport demo`` (``make demo``): the whole loop on one laptop.

Embedded Rapport with the shop's definitions loaded through the admin API, a
simulated shop sending traffic in real time, a local mail sink and an
SMS/push sink, and a readable live account of every message delivered and
why (see ``rapport.demo.run``).
"""

from rapport.demo.run import run_demo

__all__ = ["run_demo"]
