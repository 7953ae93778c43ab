"""The store conformance suite: one parametrised suite run against every store backend.

See ``backends.py`` for the registry of backends and how to add one.
"""
