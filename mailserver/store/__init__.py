"""Storage: SQLAlchemy 2 async models, repositories, a unit of work, Alembic migrations.

Invariants:
- The schema comes only from the migrations in ``migrations/versions``; tests and
  ``init`` run ``alembic upgrade head`` on both SQLite and PostgreSQL.
- Message bodies and what is derived from them live only as ciphertext
  (``crypto.envelope``); plaintext columns are those needed for ordering,
  lookup and flags.
- Callers use ``UnitOfWork``: nothing is written unless ``commit()`` runs, and
  change notifications go out only after the commit.
"""
