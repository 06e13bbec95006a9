"""The sans-IO IMAP core: bytes in, typed commands out; typed responses in, bytes out.

No sockets, no asyncio, no storage here (import-linter forbids them, see setup.cfg).
"""
