"""Wiring that runs the library: serving (store + service + app + workers), the demo, dev PKI.

Nothing here is HTTP or SQL; it puts the pieces from ``store``, ``service`` and ``web`` together
for ``passkit-stamps serve`` / ``demo`` and for development certificates.
"""
