"""Retention: artifacts and run tags expire, by facts the project wrote itself."""
