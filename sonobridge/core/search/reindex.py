"""Rebuilding the search index from the stored resources (``$reindex``, ``sonobridge reindex``)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import and_, func, select

from sonobridge import jsonio
from sonobridge.store.resources import ResourceStore
from sonobridge.store.tables import resource_versions as V
from sonobridge.store.tables import resources as R

BATCH = 500


def count_resources(store: ResourceStore, types: list[str] | None = None) -> int:
    stmt = select(func.count()).select_from(R).where(R.c.deleted.is_(False))
    if types:
        stmt = stmt.where(R.c.res_type.in_(types))
    with store.reader.connect() as conn:
        return conn.execute(stmt).scalar_one()


def reindex(store: ResourceStore, types: list[str] | None = None,
            progress: Callable[[int], None] | None = None) -> int:
    """Recompute the index rows of every current resource, one transaction per batch."""
    done = 0
    last = 0
    while True:
        stmt = (select(R.c.rid, R.c.res_type, V.c.content)
                .select_from(R.join(V, and_(V.c.rid == R.c.rid, V.c.version_id == R.c.version_id)))
                .where(R.c.deleted.is_(False), R.c.rid > last).order_by(R.c.rid).limit(BATCH))
        if types:
            stmt = stmt.where(R.c.res_type.in_(types))
        with store.write() as writer:
            rows = writer.conn.execute(stmt).all()
            for row in rows:
                writer.reindex(row.rid, row.res_type, jsonio.loads(row.content))
        if not rows:
            return done
        done += len(rows)
        last = rows[-1].rid
        if progress is not None:
            progress(len(rows))
