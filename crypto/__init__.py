"""crypto: keys, encryption at rest, password hashing, TLS contexts and the test PKI.

This package knows nothing of mailboxes, users or protocols: it is handed opaque
ids ("account:42", "blob:<uuid>") and bytes, and gives bytes back. Import-linter
(setup.cfg) keeps it that way.
"""
