"""The outbox's SQLite schema and statements (the file format: ``APPLICATION_ID``,
``SCHEMA_VERSION``)."""

from __future__ import annotations

from typing import Final

APPLICATION_ID: Final = 0x4D534F42  # "MSOB": marks the file as ours in the SQLite header
SCHEMA_VERSION: Final = 1
MEMORY: Final = ":memory:"

# Small columns first: reading them never touches a large payload's overflow pages.
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    inflight INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    born REAL NOT NULL,
    size INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT,
    event_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_key ON outbox (device_id, kind, key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS parked (
    id INTEGER PRIMARY KEY,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT,
    event_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value ANY) WITHOUT ROWID;
"""
INSERT: Final = (
    "INSERT INTO outbox (born, size, device_id, kind, key, event_id, topic, payload)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# The same, for an entry handed out in the transaction that stores it (``Outbox.exchange``).
INSERT_SENT: Final = (
    "INSERT INTO outbox"
    " (inflight, attempts, born, size, device_id, kind, key, event_id, topic, payload)"
    " VALUES (1, 1, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SELECT_IDLE: Final = (
    "SELECT id, attempts, device_id, kind, key, event_id, topic, payload"
    " FROM outbox WHERE inflight = 0 ORDER BY id LIMIT ?"
)
SELECT_PARKED: Final = (
    "SELECT reason, id, attempts, device_id, kind, key, event_id, topic, payload"
    " FROM parked ORDER BY id LIMIT ?"
)
# The payload is read only when a merger needs it (4th parameter).
SELECT_OLDER: Final = (
    "SELECT id, size, CASE WHEN ?4 THEN payload END FROM outbox"
    " WHERE device_id = ?1 AND kind = ?2 AND key = ?3 AND inflight = 0 ORDER BY id"
)
# A set of ids travels as one JSON array parameter (json_each): one fixed statement for any
# batch size, no limit on bound variables.
PARK: Final = (
    "INSERT INTO parked"
    " (id, reason, attempts, device_id, kind, key, event_id, topic, payload)"
    " SELECT id, ?, attempts, device_id, kind, key, event_id, topic, payload"
    " FROM outbox WHERE id IN (SELECT value FROM json_each(?))"
)
DELETE_IDS: Final = "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?)) RETURNING size"
HAND_OUT_IDS: Final = (
    "UPDATE outbox SET inflight = 1, attempts = attempts + 1"
    " WHERE id IN (SELECT value FROM json_each(?))"
)
RELEASE_IDS: Final = "UPDATE outbox SET inflight = 0 WHERE id IN (SELECT value FROM json_each(?))"
UNCOUNT_IDS: Final = (
    "UPDATE outbox SET attempts = max(0, attempts - 1) WHERE id IN (SELECT value FROM json_each(?))"
)
