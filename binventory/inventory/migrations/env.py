"""Alembic environment: binventory runs migrations programmatically (``binventory.inventory.db``),
handing over the connection, so there is no alembic.ini to keep in sync."""
from alembic import context

from binventory.inventory.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
