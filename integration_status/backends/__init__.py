"""Engines behind the core's store protocols: ``memory`` (default, one process) and ``redis`` (scale-out)."""
