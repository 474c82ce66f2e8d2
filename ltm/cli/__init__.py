"""Argument parsing and user messages of the command-line tools (`python -m ltm.train`, ...)."""
