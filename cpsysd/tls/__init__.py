"""Keys, certificates, a local CA, CSRs (pki, x509, names) and their files (certfiles)."""
