"""Acting on the machine: the one process runner, crash-safe files, install, verify, restart."""
