"""mailserver: the running server — IMAP and SMTP front ends, storage, and the one delivery path."""

__version__ = "0.1.0"
