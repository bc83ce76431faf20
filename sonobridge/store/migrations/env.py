"""Alembic environment. The application passes its own connection in ``config.attributes``."""

from alembic import context

from sonobridge.store.tables import metadata

if context.is_offline_mode():  # `sonobridge migrate --sql`: the statements, for review
    context.configure(dialect_name=context.config.attributes["dialect"],
                      target_metadata=metadata, literal_binds=True)
else:
    connection = context.config.attributes.get("connection")
    if connection is None:  # pragma: no cover - only for `alembic` run by hand
        raise SystemExit("run migrations through `sonobridge migrate`")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
with context.begin_transaction():
    context.run_migrations()
