"""Subcommands of the ``fdconv-zoo`` CLI, one module each."""
