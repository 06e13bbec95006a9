"""IMAP front end: a sans-IO protocol core (``protocol/``) and an asyncio session that calls services."""
