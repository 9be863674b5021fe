"""Pydantic schemas per direction (``...Create`` in, ``...Public`` out), apart from ORM models."""
