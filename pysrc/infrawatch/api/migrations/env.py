"""Alembic environment: the connection comes from `infrawatch.api.db.migrate` (no alembic.ini)."""

from __future__ import annotations

from alembic import context

from infrawatch.api.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite alters tables by copy
)
with context.begin_transaction():
    context.run_migrations()
