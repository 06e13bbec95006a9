"""directory: who exists and who is trusted.

Local domains, accounts (professionals PER/ORG/APP and patients), INS and
professional identifiers, address resolution, the trust space of operators.
It uses the store through units of work and never speaks SMTP or IMAP.
"""
