"""A miniature inference project: a router in front of one of three backends."""

from pathlib import Path

__version__ = (Path(__file__).parent / "VERSION").read_text().strip()
