"""HTTP mounts. ``handlers`` is framework-neutral; ``starlette`` and ``flask`` are the only framework importers."""
