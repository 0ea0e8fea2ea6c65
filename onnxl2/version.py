"""The package version (one place; the bitstream header and reports carry it)."""
__version__ = "0.1.0"
