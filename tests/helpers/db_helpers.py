"""Database helpers only the tests use: SQLAlchemy engines and quoted identifiers."""

from __future__ import annotations

from typing import Any

import sqlalchemy
from sqlalchemy.engine import make_url

from gestimum_pipeline.db import APPLICATION_NAME, DEFAULT_CONNECT_TIMEOUT, normalize_url, validate_identifier


def make_engine(url: str, *, setting: str = "database URL", **kwargs: Any) -> sqlalchemy.Engine:
    """Create a SQLAlchemy engine on psycopg2, with pre-ping and our application_name.

    Extra keyword arguments go to :func:`sqlalchemy.create_engine`; ``connect_args``
    are merged with ours (yours win).
    """
    normalized = normalize_url(url, setting=setting)
    query = make_url(normalized).query
    connect_args: dict[str, Any] = {}
    if "application_name" not in query:
        connect_args["application_name"] = APPLICATION_NAME
    if "connect_timeout" not in query:
        connect_args["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
    connect_args.update(kwargs.pop("connect_args", {}))
    kwargs.setdefault("pool_pre_ping", True)  # connections die across long idle gaps between runs
    return sqlalchemy.create_engine(normalized, connect_args=connect_args, **kwargs)


def quote_ident(name: str, what: str) -> str:
    """Return the validated identifier double-quoted, for SQL built without psycopg2.sql."""
    return '"' + validate_identifier(name, what).replace('"', '""') + '"'
