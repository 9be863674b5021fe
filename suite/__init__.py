"""The composition root: the `atelier` command and the process supervisor.

The one package allowed to import every layer (``shared``, ``ranking``, the services and the
workers); nothing imports it back.
"""
