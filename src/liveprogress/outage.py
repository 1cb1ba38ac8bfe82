"""Which errors mean a service the site needs is down (the database, Redis).

Only "the service can't be reached" counts: a refused or lost connection, a
server shutting down or starting up, a SQLite file locked past its timeout.
Clients are then told ``unavailable`` (HTTP 503 with ``Retry-After``, an error
frame, close code 4013) and try again; any other error is a bug and stays one
(HTTP 500). The answers themselves are made where each transport is: the ASGI
application (``asgi.py``) for HTTP, the socket and the event streams for theirs.
"""

from __future__ import annotations

import sqlite3

from django.db import InterfaceError, OperationalError

#: PostgreSQL's SQLSTATEs for a server that can't serve: class 08 (connection
#: exceptions) and the three of class 57 that a shutdown or start-up sends.
_POSTGRES_DOWN = ("08", "57P01", "57P02", "57P03")
#: SQLite's codes for a database file that is busy or can't be opened right now.
_SQLITE_DOWN = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN)
#: MySQL client errors for a server that can't be reached or went away.
_MYSQL_DOWN = (2002, 2003, 2006, 2013)


def is_unavailable(error: BaseException) -> bool:
    """True when ``error`` says a service is unreachable, not that the code is wrong."""
    if isinstance(error, InterfaceError):
        return True  # the connection is closed: it broke earlier
    if isinstance(error, OperationalError):
        return _database_down(error.__cause__)
    return _redis_down(error)


def _database_down(cause: BaseException | None) -> bool:
    """Whether the driver's error under Django's ``OperationalError`` is a lost server."""
    if cause is None:
        return False
    if isinstance(cause, sqlite3.Error):
        # The primary code: extended ones (SQLITE_BUSY_SNAPSHOT, ...) add high bits.
        return (getattr(cause, "sqlite_errorcode", 0) & 0xFF) in _SQLITE_DOWN
    driver = type(cause).__module__.split(".")[0]
    if driver in ("psycopg", "psycopg2"):
        state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
        # No SQLSTATE: no server answered at all (refused, or the connection broke).
        return state is None or state.startswith(_POSTGRES_DOWN)
    if driver in ("MySQLdb", "pymysql"):
        return bool(cause.args) and cause.args[0] in _MYSQL_DOWN
    return False


def _redis_down(error: BaseException) -> bool:
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # no Redis client installed: no Redis to lose
        return False
    return isinstance(error, (RedisConnectionError, RedisTimeoutError))
