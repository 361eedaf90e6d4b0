"""Unit rendering: a description in, unit-file text out. Pure: no files, no subprocesses."""
