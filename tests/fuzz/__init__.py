"""Shared fuzzing equipment: strategies, settings, the watchdog and the long-run script."""
