"""The database adapter: SQLAlchemy tables, Alembic migrations, and a repository returning domain values.

The only place SQL exists. Services see frozen domain dataclasses, never ORM objects or sessions.
"""
