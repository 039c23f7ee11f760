"""Alembic migrations of the node's database (run through :func:`dicomnode.db.migrate_database`)."""
