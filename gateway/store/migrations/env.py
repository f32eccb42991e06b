"""Alembic environment: runs against the engine Pathway hands it."""

from alembic import context

from gateway.store.models import Base
import gateway.delivery.models  # noqa: F401,E402 - registers the delivery tables with Base
import gateway.console.models  # noqa: F401,E402 - registers the console tables with Base
import gateway.reporting.models  # noqa: F401,E402 - registers the report sign-off table with Base
import gateway.sharing.governance_models  # noqa: F401,E402 - registers the governance tables with Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
