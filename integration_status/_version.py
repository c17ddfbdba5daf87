"""The package version (one place, read by the package door and the command line)."""

__version__ = "0.1.0"
