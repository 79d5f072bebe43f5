"""An incremental run's rules, recomputed only for what its changed records touch (SPEC 8).

A saved working set (`pipeline/apply_state.py`) holds the district's records and
everything the last run computed from them: locations, which classes are kept,
each enrollment's state, who teaches, the users imported (`cand`) and those
rejected as a duplicate email (`losers`), every username with the name it asked
for (`uname`), the errors and warnings, and the product items as stored. When
the options are the same and the district's day has not gone back, an
incremental run lays its changed records over it (`WorkingSet.change`, which
notes them here) and `compute_changes` follows the rules' dependencies outward
from those records only:

| what changed | what is recomputed |
|---|---|
| a school org (added, removed, renamed) | the locations (a handful); classes of a school that came or went; users in it |
| a class | whether it is kept (its school known); its enrollments' state |
| an enrollment | its state; its user's roster-teacher flag; its class, old and new |
| the district's day | the enrollments whose `endDate` fell between the two days |
| a term | the classes that name it |
| a user | its enrollments' state; its product role and email rules; its email's group |
| a user's roster-teacher flag | its product role |
| an email's group (one user per email) | the winner and every loser's reason |
| who is imported, or whose email | usernames: see below |

Usernames are given in sourcedId order, each user taking the name it asks for
unless an earlier user holds it or it is another user's email
(`usernames.username_conflict`). A user's outcome therefore depends only on the
name it asks for, the latest earlier user whose final name is that one, and
the owner of that email. So the users to redo are seeded (changed users, users
asking for an email whose owner changed, later users asking for a name a
removed user held) and taken from a heap in sourcedId order; whenever one's
final name changes, the later users asking for the old or the new name are
added. Users before it are settled when it is taken, so the outcome is the
sequential pass's exactly.

What the rules touched is marked in table `dirty` (kind, id); the plan
(`bounded_changes.plan_changed_kind`) compares only those items with their
stored form: every other item is unchanged by construction. Sets are SQLite
tables (`scope`), so memory stays flat however much changed; the work is in
proportion to the change, plus a few whole-table scans done only when a term
or a school changed. `tests/unit/test_scope.py` proves it equal to computing
the whole district again.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rostersync.roster.working_set import WorkingSet

_SCOPE = """
CREATE TABLE IF NOT EXISTS scope(name TEXT, id TEXT, PRIMARY KEY (name, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dirty(kind TEXT, id TEXT, PRIMARY KEY (kind, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pool(email TEXT, ord TEXT, sid TEXT, email_lc TEXT, prole TEXT,
    PRIMARY KEY (email, ord, sid)) WITHOUT ROWID;
"""
# What change() notes: the records laid over the file, per entity
CHANGED = {
    "orgs": "org",
    "academicSessions": "term",
    "classes": "class",
    "users": "user",
    "enrollments": "enr",
}
_IN_FORCE = 3  # working_set's enr.state


def _in(name: str) -> str:
    """The ids of one set of table `scope`, as a subquery."""
    return f"SELECT id FROM scope WHERE name = '{name}'"


def begin(ws: WorkingSet) -> None:
    ws.db.executescript(_SCOPE)


def note_change(ws: WorkingSet, entity: str, sourced_id: str) -> None:
    """Called by WorkingSet.change before a record is replaced: an enrollment's old class and
    user are touched too (the row about to go names them)."""
    db = ws.db
    db.execute("INSERT OR IGNORE INTO scope VALUES (?, ?)", (CHANGED[entity], sourced_id))
    if entity == "enrollments":
        old = db.execute("SELECT class_id, user_id FROM enr WHERE sid = ?", (sourced_id,)).fetchone()
        if old is not None:
            db.execute("INSERT OR IGNORE INTO scope VALUES ('oldClass', ?), ('oldUser', ?)", old)


def _add(ws: WorkingSet, name: str, query: str, params: tuple[object, ...] = ()) -> None:
    ws.db.execute(f"INSERT OR IGNORE INTO scope SELECT '{name}', * FROM ({query})", params)


def _dirty(ws: WorkingSet, kind: str, query: str, params: tuple[object, ...] = ()) -> None:
    ws.db.execute(f"INSERT OR IGNORE INTO dirty SELECT '{kind}', * FROM ({query})", params)


def _count(ws: WorkingSet, name: str) -> int:
    (n,) = ws.db.execute("SELECT COUNT(*) FROM scope WHERE name = ?", (name,)).fetchone()
    return int(n)


# Up to this many changed records a run is always scoped; above it, only while they are at
# most this share of the district's users and enrollments. A change that large (a rollover)
# costs about what computing the district whole does, and the sets of what it touched
# would be held in memory, so the district is computed whole instead.
SCOPED_UP_TO = 10_000
SCOPED_SHARE = 0.2


def worth_scoping(ws: WorkingSet) -> bool:
    (changed,) = ws.db.execute(
        "SELECT COUNT(*) FROM scope WHERE name IN ('org', 'term', 'class', 'user', 'enr')"
    ).fetchone()
    if changed <= SCOPED_UP_TO:
        return True
    (size,) = ws.db.execute("SELECT (SELECT COUNT(*) FROM users) + (SELECT COUNT(*) FROM enr)").fetchone()
    return changed <= SCOPED_SHARE * size


def compute_changes(ws: WorkingSet) -> None:
    db = ws.db
    assert ws.saved_today is not None
    db.execute("BEGIN")
    _schools_and_classes(ws)
    _enrollments(ws)
    _teaches(ws)
    db.execute("COMMIT")
    db.execute("BEGIN")
    _candidates(ws)
    _usernames(ws)
    _mark_dirty(ws)
    db.execute("COMMIT")


def _schools_and_classes(ws: WorkingSet) -> None:
    db = ws.db
    before = ws._school_ids
    db.execute("DELETE FROM schools")
    ws.make_schools()
    gone_or_new = sorted(before ^ ws._school_ids)
    # Classes to keep or reject again: changed ones, and those of a school that came or went
    _add(ws, "K0", _in("class"))
    if gone_or_new and ws.options.auto_create_schools:
        marks = ",".join("?" * len(gone_or_new))
        _add(ws, "K0", f"SELECT sid FROM classes WHERE school_id IN ({marks})", tuple(gone_or_new))
        # a user's schoolIds are its orgs that are locations
        _dirty(
            ws,
            "users",
            f"SELECT u.sid FROM users u WHERE EXISTS "
            f"(SELECT 1 FROM json_each(u.org_ids) j WHERE j.value IN ({marks}))",
            tuple(gone_or_new),
        )
    db.execute(f"DELETE FROM issues WHERE kind = 'ERR' AND entity = 'classes' AND sid IN ({_in('K0')})")
    ws.keep_classes(_in("K0"))
    # Classes whose product item may change: those, classes an enrollment left, classes of a
    # changed term
    _dirty(ws, "classes", "SELECT id FROM scope WHERE name IN ('K0', 'oldClass')")
    if _count(ws, "term"):
        _dirty(
            ws,
            "classes",
            "SELECT c.sid FROM classes c WHERE EXISTS (SELECT 1 FROM json_each(c.doc, '$.termIds') j "
            f"WHERE j.value IN ({_in('term')}))",
        )


def _enrollments(ws: WorkingSet) -> None:
    db = ws.db
    # Enrollments whose state may change: changed ones, those of a class kept or rejected
    # again, of a changed user (it may be new or gone), and those that ended since the last run
    _add(ws, "N0", _in("enr"))
    _add(ws, "N0", f"SELECT sid FROM enr WHERE class_id IN ({_in('K0')})")
    _add(ws, "N0", f"SELECT sid FROM enr WHERE user_id IN ({_in('user')})")
    assert ws.saved_today is not None
    if ws.today > ws.saved_today:
        _add(
            ws,
            "N0",
            "SELECT sid FROM enr WHERE end_ >= ? AND end_ < ?",
            (ws.saved_today.isoformat(), ws.today.isoformat()),
        )
    db.execute(f"DELETE FROM issues WHERE kind = 'ERR' AND entity = 'enrollments' AND sid IN ({_in('N0')})")
    ws.enrollment_states(_in("N0"))
    _dirty(ws, "enrollments", _in("N0"))
    _dirty(ws, "classes", f"SELECT class_id FROM enr WHERE sid IN ({_in('N0')})")
    # Users whose roster-teacher flag may change
    _add(ws, "Ut", f"SELECT user_id FROM enr WHERE sid IN ({_in('N0')})")
    _add(ws, "Ut", "SELECT id FROM scope WHERE name IN ('oldUser', 'user')")


def _teaches(ws: WorkingSet) -> None:
    teaches = (
        "EXISTS (SELECT 1 FROM enr e WHERE e.user_id = users.sid AND e.state = ? AND e.role = 'teacher')"
    )
    _add(ws, "T", f"SELECT sid FROM users WHERE sid IN ({_in('Ut')}) AND teaches != {teaches}", (_IN_FORCE,))
    ws.db.execute(f"UPDATE users SET teaches = 1 - teaches WHERE sid IN ({_in('T')})")


def _candidates(ws: WorkingSet) -> None:
    """Role and email rules for the changed users and those whose roster-teacher flag
    changed; then one user per email, again, for every email they had or have."""
    from rostersync.roster.working_set import candidate

    db = ws.db
    _add(ws, "R", "SELECT id FROM scope WHERE name IN ('user', 'T')")
    # Who was imported before, among the users whose email group is redone
    _add(ws, "E", f"SELECT email FROM cand WHERE sid IN ({_in('R')})")
    _add(ws, "E", f"SELECT email FROM losers WHERE sid IN ({_in('R')})")
    fresh: list[tuple[str, str, str, str, str]] = []
    rejected: list[tuple[str, str]] = []
    rows = db.execute(f"SELECT sid, ord, role, email, teaches FROM users WHERE sid IN ({_in('R')})")
    for sid, ord_, role, email, teaches in rows.fetchall():
        outcome = candidate(ws.options, sid, ord_, role, email, teaches)
        if isinstance(outcome, str):
            rejected.append((sid, outcome))
        elif outcome is not None:
            fresh.append(outcome)
    db.executemany("INSERT OR IGNORE INTO scope VALUES ('E', ?)", ((row[2],) for row in fresh))
    _add(ws, "wasWin", f"SELECT sid FROM cand WHERE sid IN ({_in('R')}) OR email IN ({_in('E')})")
    # The pool of each email group: its members, less the redone users, plus their new rows
    db.execute(
        "INSERT INTO pool SELECT email, ord, sid, email_lc, prole FROM cand"
        f" WHERE email IN ({_in('E')}) AND sid NOT IN ({_in('R')})"
    )
    db.execute(
        "INSERT INTO pool SELECT email, ord, sid, email_lc, prole FROM losers"
        f" WHERE email IN ({_in('E')}) AND sid NOT IN ({_in('R')})"
    )
    db.executemany("INSERT INTO pool VALUES (?, ?, ?, ?, ?)", ((e, o, s, lc, p) for s, o, e, lc, p in fresh))
    _add(ws, "regrouped", "SELECT sid FROM pool")
    _add(ws, "regrouped", _in("R"))
    regrouped = _in("regrouped")
    db.execute(f"DELETE FROM cand WHERE sid IN ({regrouped})")
    db.execute(f"DELETE FROM losers WHERE sid IN ({regrouped})")
    db.execute(f"DELETE FROM issues WHERE kind = 'ERR' AND entity = 'users' AND sid IN ({regrouped})")
    ws._issues("ERR", "users", rejected)
    errors: list[tuple[str, str]] = []
    winner_email, winner = None, ""
    for email, ord_, sid, email_lc, prole in db.execute(
        "SELECT * FROM pool ORDER BY email, ord, sid"
    ).fetchall():
        row = (sid, ord_, email, email_lc, prole)
        if email != winner_email:
            winner_email, winner = email, sid
            db.execute("INSERT INTO cand VALUES (?, ?, ?, ?, ?)", row)
            continue
        errors.append((sid, f"duplicate email: sourcedId {winner} has it"))
        db.execute("INSERT INTO losers VALUES (?, ?, ?, ?, ?)", row)
    ws._issues("ERR", "users", errors)
    # Imported now and not before, or the other way round
    _add(ws, "nowWin", f"SELECT sid FROM cand WHERE sid IN ({regrouped})")
    _add(ws, "flip", f"SELECT id FROM scope WHERE name = 'nowWin' AND id NOT IN ({_in('wasWin')})")
    _add(ws, "flip", f"SELECT id FROM scope WHERE name = 'wasWin' AND id NOT IN ({_in('nowWin')})")


def _usernames(ws: WorkingSet) -> None:
    db = ws.db
    # Users no longer imported give up their names: the later users asking for one redo theirs
    heap: list[tuple[str, str]] = []
    queued: set[tuple[str, str]] = set()

    def push(rows: object) -> None:
        for order, sid in rows:  # type: ignore[attr-defined]
            if (order, sid) not in queued:
                queued.add((order, sid))
                heapq.heappush(heap, (order, sid))

    gone = db.execute(
        f"SELECT n.sid, n.final_lc FROM uname n WHERE n.sid IN ({_in('wasWin')}) AND n.sid NOT IN ({_in('nowWin')})"
    ).fetchall()
    for sid, final_lc in gone:
        db.execute("DELETE FROM uname WHERE sid = ?", (sid,))
        db.execute("DELETE FROM issues WHERE kind = 'WARN' AND entity = 'users' AND sid = ?", (sid,))
        push(db.execute("SELECT ord, sid FROM uname WHERE wanted_lc = ?", (final_lc,)).fetchall())
    # Seeds: the redone users imported now; users asking for an email whose owner may change
    push(db.execute(f"SELECT ord, sid FROM cand WHERE sid IN ({_in('nowWin')})").fetchall())
    push(
        db.execute(
            "SELECT n.ord, n.sid FROM uname n JOIN cand c ON c.sid = n.sid"
            " WHERE n.wanted_lc IN (SELECT lower(id) FROM scope WHERE name = 'E')"
        ).fetchall()
    )
    while heap:
        order, sid = heapq.heappop(heap)
        row = db.execute(
            "SELECT c.email, u.username FROM cand c JOIN users u ON u.sid = c.sid WHERE c.sid = ?", (sid,)
        ).fetchone()
        if row is None:
            continue  # not imported (any more)
        email, source_username = row
        db.execute("INSERT OR IGNORE INTO dirty VALUES ('users', ?)", (sid,))

        def holder(key: str, order: str = order, sid: str = sid) -> str | None:
            row = db.execute(
                "SELECT sid FROM uname WHERE final_lc = ? AND (ord < ? OR (ord = ? AND sid < ?))"
                " ORDER BY ord DESC, sid DESC LIMIT 1",
                (key, order, order, sid),
            ).fetchone()
            return row[0] if row else None

        name, key, warnings = ws.username(sid, email, source_username, holder)
        before = db.execute("SELECT final_lc FROM uname WHERE sid = ?", (sid,)).fetchone()
        db.execute(
            "INSERT OR REPLACE INTO uname VALUES (?, ?, ?, ?, ?)", (sid, order, key, name, name.lower())
        )
        db.execute("DELETE FROM issues WHERE kind = 'WARN' AND entity = 'users' AND sid = ?", (sid,))
        ws._issues("WARN", "users", warnings)
        old_final = before[0] if before else None
        if old_final != name.lower():
            later = (
                "SELECT ord, sid FROM uname WHERE wanted_lc IN (?, ?) AND (ord > ? OR (ord = ? AND sid > ?))"
            )
            push(db.execute(later, (old_final, name.lower(), order, order, sid)).fetchall())


def _mark_dirty(ws: WorkingSet) -> None:
    # Users: changed ones, those whose role or email group was redone, imported or not any more
    _dirty(ws, "users", "SELECT id FROM scope WHERE name IN ('R', 'regrouped')")
    # A stored user kept inactive gives up an email another user now has
    _dirty(
        ws,
        "users",
        "SELECT s.id FROM stored s WHERE s.kind = 'users' AND json_extract(s.doc, '$.email') IN "
        f"({_in('E')})",
    )
    # A user imported or not any more: its enrollments, and so its classes' rosters
    _dirty(ws, "enrollments", f"SELECT sid FROM enr WHERE user_id IN ({_in('flip')})")
    _dirty(ws, "enrollments", _in("enr"))
    _dirty(ws, "classes", f"SELECT class_id FROM enr WHERE user_id IN ({_in('flip')})")
