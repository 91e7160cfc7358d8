"""Local stand-ins for development and the demo: never mounted into production."""
