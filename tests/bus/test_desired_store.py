"""The desired-value store: newest version wins, one commit per message, outcomes recorded."""

from __future__ import annotations

from pathlib import Path

from mapper_sdk._desired_store import DesiredStore


def _commits(store: DesiredStore) -> list[str]:
    seen: list[str] = []
    store._db.set_trace_callback(lambda sql: seen.append(sql) if sql == "COMMIT" else None)
    return seen


def test_values_of_one_message_share_one_commit_and_keep_their_own_answers(
    tmp_path: Path,
) -> None:
    store = DesiredStore(tmp_path / "desired.sqlite3")
    commits = _commits(store)
    assert store.put_many([("ns/d", "a", "1", 10), ("ns/d", "b", "2", 10)]) == [True, True]
    # Newer wins, equal or older is a repeat: each value answered on its own.
    assert store.put_many(
        [("ns/d", "a", "3", 11), ("ns/d", "b", "9", 10), ("ns/d", "b", "8", 9)]
    ) == [True, False, False]
    assert len(commits) == 2
    store.mark_many([("ns/d", "a", 11, "applied"), ("ns/d", "b", 10, "refused")])
    store.mark_many([("ns/d", "a", 10, "failed")])  # an old version's outcome changes nothing
    assert len(commits) == 4
    store.close()
    reopened = DesiredStore(tmp_path / "desired.sqlite3")  # persisted, not just cached
    rows = {(r.property, r.value, r.version, r.status) for r in reopened.for_device("ns/d")}
    assert rows == {("a", "3", 11, "applied"), ("b", "2", 10, "refused")}
    assert reopened.put("ns/d", "a", "4", 12)
    reopened.close()
