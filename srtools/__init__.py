"""srtools: Unix-style commands for super-resolution video streaming."""

__version__ = "0.1.0"
