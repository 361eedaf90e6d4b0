"""Other outputs of a description: nginx site, supervisord, Debian maintainer scripts."""
