"""The test harness: one server runner, one server fixture factory, one message builder.

- ``ServerThread`` (``tests.harness.server``): a whole masante server on its own
  loop in a thread, with an injected clock (the fixtures give a ``FakeClock``)
  and resolver (a ``MemoryResolver``); ``call``, ``settle``, ``advance``.
- ``server_fixture`` (``tests.harness.server``): a module-scoped server fixture
  on both databases, built from config overrides and populate steps.
- ``message`` (``tests.harness.messages``): every message the tests send.
"""

from tests.harness.messages import crlf, message
from tests.harness.server import Databases, Populate, ServerThread, server_fixture

__all__ = ["Databases", "Populate", "ServerThread", "crlf", "message", "server_fixture"]
