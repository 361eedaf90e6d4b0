"""The ephemeral systemd container: boot, commands inside, journal, teardown."""
