"""The command line: python -m include.nightly_ci COMMAND."""
