"""PostgreSQL persistence: SQLAlchemy 2 async + asyncpg, entities mapped imperatively.

Public surface for the composition root:
``create_engine(url, pool_size)``, ``SqlAlchemyUnitOfWorkFactory(engine)``,
``upgrade/downgrade/revisions`` (alembic, in ``adapters.postgres.migrate``) and the error tree in
``adapters.postgres.errors``. Importing this package does no work.
"""

from adapters.postgres.engine import create_engine, start_mappers
from adapters.postgres.errors import DatabaseUnavailable, PersistenceError
from adapters.postgres.uow import SqlAlchemyUnitOfWork, SqlAlchemyUnitOfWorkFactory

__all__ = [
    "DatabaseUnavailable",
    "PersistenceError",
    "SqlAlchemyUnitOfWork",
    "SqlAlchemyUnitOfWorkFactory",
    "create_engine",
    "start_mappers",
]
