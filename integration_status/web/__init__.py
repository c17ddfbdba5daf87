"""HTTP mounts. ``handlers`` is framework-neutral; ``starlette`` and ``flask`` are the only framework importers.

This package's own door names the status bar page (plain HTML, CSS and an ES module, no build step) that a
host may serve beside the API::

    app.mount("/", StaticFiles(directory=STATUS_BAR_DIR, html=True))
"""

from pathlib import Path as _Path
from typing import Final as _Final

__all__ = ["STATUS_BAR_DIR"]

#: The folder of the status bar page: index.html, status-bar.js, status-bar.css, integration-status.js.
STATUS_BAR_DIR: _Final = _Path(__file__).resolve().parent / "static"
