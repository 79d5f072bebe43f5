"""`compute_product` in bounded memory: the same SPEC 4 rules over a disk-backed working set.

`compute_product` holds the whole district as pydantic models; at 1,000,000
users and 7,000,000 enrollments that is gigabytes (SPEC 8). Here the mirror is
streamed, one record at a time, into SQLite tables under a temporary directory
(Lambda has up to 10 GB of `/tmp`) holding the join columns, and every rule
that needs the whole district (unknown references, roster teachers, one user
per email, unique usernames, a class's roster and start date) is answered by
SQL or by a streaming pass with indexed look-ups. Python holds one record, one
class's roster, or one batch of rows at a time; the only whole-district sets
kept in memory are the school ids (a district's locations, not its people).

The per-record rules are the very functions `compute_product` calls
(`product_role`, `valid_email`, `wanted_username`/`username_conflict`,
`product_class` with its name and visibility, `class_start_date`,
`enrollment_in_force`'s test), and the result is proven equal to `compute_product`'s by
`tests/unit/test_working_set.py`. Product items come out in id order, ready
for a merge join with the stored items (`pipeline/bounded_changes.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from itertools import islice
from typing import Any

from pydantic import ValidationError

from rostersync.roster import scope  # the scoped compute of a saved working set (reads these tables)
from rostersync.roster.compute import MAIN_LOCATION, RosterOptions, product_class, valid_email
from rostersync.roster.models import ENTITY_MODELS, AcademicSession, Enrollment, Org, RosterClass, User
from rostersync.roster.product import Issue, ProductUser
from rostersync.roster.roles import product_role
from rostersync.roster.usernames import (
    UsernameCandidate,
    sourced_id_order,
    username_conflict,
    wanted_username,
)
from rostersync.roster.visibility import class_start_date

BATCH = 5000
# A working set's directory: `rostersync-apply-{pid}-…` (see sweep_leftovers)
LEFTOVER_PREFIX = "rostersync-apply-"
MirrorRow = tuple[str, Any, str]  # (sourcedId, normalized JSON or a Record, version), as iter_mirror yields


def sweep_leftovers(directory: str | None = None) -> int:
    """Remove the working sets an invocation that was killed left behind (a Lambda timeout
    stops the process, and the next invocation in the same container finds its /tmp as it
    was: gigabytes at a large district). Only those of this process (one apply at a time)
    and of processes no longer alive. Returns how many were removed."""
    root = directory or tempfile.gettempdir()
    removed = 0
    for name in os.listdir(root):
        if not name.startswith(LEFTOVER_PREFIX):
            continue
        pid_text = name[len(LEFTOVER_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid != os.getpid() and _alive(pid):
            continue
        path = os.path.join(root, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def order_key(sourced_id: str) -> str:
    """`sourced_id_order` as one text that SQLite sorts the same way (UTF-8 bytes = code points)."""
    numeric, text = sourced_id_order(sourced_id)
    return ("0" if numeric == 0 else "1") + text


_SCHEMA = """
CREATE TABLE orgs(sid TEXT PRIMARY KEY, type TEXT, name TEXT) WITHOUT ROWID;
CREATE TABLE terms(sid TEXT PRIMARY KEY, title TEXT, start TEXT) WITHOUT ROWID;
CREATE TABLE classes(sid TEXT PRIMARY KEY, school_id TEXT, doc TEXT, kept INTEGER DEFAULT 0) WITHOUT ROWID;
CREATE TABLE users(
    sid TEXT PRIMARY KEY, ord TEXT, role TEXT, email TEXT, username TEXT,
    given TEXT, family TEXT, enabled INTEGER, org_ids TEXT, teaches INTEGER DEFAULT 0) WITHOUT ROWID;
CREATE TABLE enr(
    sid TEXT PRIMARY KEY, class_id TEXT, user_id TEXT, role TEXT, begin TEXT, end_ TEXT,
    state INTEGER DEFAULT 0) WITHOUT ROWID;
CREATE TABLE schools(sid TEXT PRIMARY KEY, name TEXT) WITHOUT ROWID;
-- users that pass role and email rules; the losers of a duplicate email move to `losers`
CREATE TABLE cand(sid TEXT PRIMARY KEY, ord TEXT, email TEXT, email_lc TEXT, prole TEXT) WITHOUT ROWID;
CREATE TABLE losers(sid TEXT PRIMARY KEY, ord TEXT, email TEXT, email_lc TEXT, prole TEXT) WITHOUT ROWID;
CREATE TABLE taken(key TEXT PRIMARY KEY, sid TEXT) WITHOUT ROWID;
-- wanted_lc: the username asked for (lower-cased); final_lc: the one given, lower-cased
CREATE TABLE uname(sid TEXT PRIMARY KEY, ord TEXT, wanted_lc TEXT, username TEXT, final_lc TEXT) WITHOUT ROWID;
-- what the rules were computed with (options, today): a saved file computed with others is
-- computed whole again; with the same, only what the changed records touch (scope.py)
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE issues(kind TEXT, entity TEXT, ord TEXT, sid TEXT, reason TEXT);
-- the product items as stored after this run's writes (see bounded_changes), and as they
-- were stored after the run that saved this file (a saved working set: `stored`)
CREATE TABLE next_stored(kind TEXT, id TEXT, doc TEXT, PRIMARY KEY (kind, id)) WITHOUT ROWID;
CREATE TABLE stored(kind TEXT, id TEXT, doc TEXT, PRIMARY KEY (kind, id)) WITHOUT ROWID;
"""
# The file's layout; a saved working set of another layout is not reused.
SCHEMA_VERSION = 2
# Rebuilt by every compute(): cleared before a saved working set is computed again.
_DERIVED = ("schools", "cand", "losers", "taken", "uname", "issues", "next_stored")
_DERIVED_INDEXES = ("cand_email", "cand_email_lc", "cand_ord")
# Tables other modules keep in the file for one run only (apply_bounded, bounded_changes).
_RUN_ONLY = ("plan", "seen", "absent", "overlay", "scope", "dirty", "pool", "resume")
# Kept in a saved file for the next run's scoped compute (roster/scope.py); built by
# prepare_to_save, so a run that is not saved does not pay for them.
_SCOPE_INDEXES = (
    "CREATE INDEX IF NOT EXISTS enr_user ON enr(user_id)",
    "CREATE INDEX IF NOT EXISTS enr_end ON enr(end_)",
    "CREATE INDEX IF NOT EXISTS classes_school ON classes(school_id)",
    "CREATE INDEX IF NOT EXISTS losers_email ON losers(email)",
    # a redone record's issues are replaced (a district may hold a million warnings)
    "CREATE INDEX IF NOT EXISTS issues_sid ON issues(sid, kind, entity)",
    "CREATE INDEX IF NOT EXISTS uname_wanted ON uname(wanted_lc, ord, sid)",
    "CREATE INDEX IF NOT EXISTS uname_final ON uname(final_lc, ord, sid)",
    "CREATE INDEX IF NOT EXISTS stored_user_email ON stored(json_extract(doc, '$.email')) WHERE kind = 'users'",
)


def options_fingerprint(options: RosterOptions) -> str:
    """The options as one stable text: a saved working set is scoped only under the same."""

    def plain(value: Any) -> Any:
        dump = getattr(value, "model_dump", None)
        return dump(by_alias=True, mode="json") if dump else str(value)

    fields = {name: getattr(options, name) for name in options.__dataclass_fields__}
    fields["role_mapping"] = dict(options.role_mapping)
    return json.dumps(fields, sort_keys=True, default=plain)


# enr.state
_UNKNOWN_CLASS, _UNKNOWN_USER, _IN_FORCE, _ENDED = 1, 2, 3, 4


class WorkingSet:
    """One district's computed product state, on disk. Use as a context manager."""

    def __init__(
        self, options: RosterOptions, today: date, *, directory: str | None = None, saved: str | None = None
    ) -> None:
        """A new, empty working set; or, with `saved`, the file of a saved one (moved in),
        its records kept and everything computed from them cleared."""
        self.options = options
        self.today = today
        self._dir = tempfile.mkdtemp(prefix=f"{LEFTOVER_PREFIX}{os.getpid()}-", dir=directory)
        self.path = os.path.join(self._dir, "working.db")
        if saved is not None:
            shutil.move(saved, self.path)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        # A scratch database: nothing to recover after a crash, so no journal and no fsync.
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE", "cache_size=-16000"):
            self.db.execute(f"PRAGMA {pragma}")
        self._school_ids: frozenset[str] = frozenset()
        self.computed = False
        # A saved working set computed with these options on this day or before: compute()
        # recomputes only what the records laid over it touch (roster/scope.py).
        self.scoped = False
        self.saved_today: date | None = None
        if saved is None:
            self.db.executescript(_SCHEMA)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return
        (version,) = self.db.execute("PRAGMA user_version").fetchone()
        if version != SCHEMA_VERSION:
            self.close()
            raise ValueError(f"saved working set has layout {version}, not {SCHEMA_VERSION}")
        self._clear_run_tables()
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if (
            meta.get("options") == options_fingerprint(options)
            and meta.get("today", "9") <= today.isoformat()
        ):
            self.scoped = True
            self.saved_today = date.fromisoformat(meta["today"])
            self._school_ids = frozenset(sid for (sid,) in self.db.execute("SELECT sid FROM schools"))
            scope.begin(self)
            return
        self._clear_derived()

    @classmethod
    def resume(cls, path: str, options: RosterOptions, today: date) -> WorkingSet:
        """The file of a working set as an invocation left it (a checkpoint of its reading or
        of its writes): moved in with every table, as read, computed and planned so far."""
        working_set = cls.__new__(cls)
        working_set.options, working_set.today = options, today
        working_set._dir = tempfile.mkdtemp(prefix=f"{LEFTOVER_PREFIX}{os.getpid()}-")
        working_set.path = os.path.join(working_set._dir, "working.db")
        shutil.move(path, working_set.path)
        working_set.db = sqlite3.connect(working_set.path, isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE", "cache_size=-16000"):
            working_set.db.execute(f"PRAGMA {pragma}")
        working_set._school_ids = frozenset(
            sid for (sid,) in working_set.db.execute("SELECT sid FROM schools")
        )
        working_set.computed, working_set.scoped, working_set.saved_today = True, False, None
        return working_set

    def _clear_derived(self) -> None:
        """Forget everything computed from the records: compute() then computes it whole."""
        self.db.execute("BEGIN")
        for name in _DERIVED:
            self.db.execute(f"DELETE FROM {name}")
        for index in _DERIVED_INDEXES:
            self.db.execute(f"DROP INDEX IF EXISTS {index}")
        self.db.execute("UPDATE users SET teaches = 0 WHERE teaches = 1")
        self.db.execute("COMMIT")
        self.scoped = False

    def _clear_run_tables(self) -> None:
        for name in _RUN_ONLY:
            self.db.execute(f"DROP TABLE IF EXISTS {name}")

    def change(self, entity: str, rows: Iterable[MirrorRow]) -> int:
        """Lay mirror rows over a saved working set's records: a row replaces the record
        of its sourcedId; a deleted (tobedeleted) one removes it. Returns how many rows."""
        model = ENTITY_MODELS[entity]
        table, to_row = _LOADERS[entity]
        marks = ",".join("?" * _WIDTH[table])
        changed = 0
        it = iter(rows)
        while batch := list(islice(it, BATCH)):
            self.db.execute("BEGIN")
            for sourced_id, doc, _version in batch:
                record = _read(model, entity, sourced_id, doc)
                if self.scoped:
                    scope.note_change(self, entity, record.sourcedId)
                if record.deleted:
                    self.db.execute(f"DELETE FROM {table} WHERE sid = ?", (record.sourcedId,))
                else:
                    self.db.execute(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", to_row(record))
            self.db.execute("COMMIT")
            changed += len(batch)
        return changed

    def iter_stored(self, kind: str, *, dirty: bool = False) -> Iterator[dict[str, Any]]:
        """The kind's product items as the run that saved this working set left them, by id
        (with `dirty`, only those a scoped compute marked)."""
        sql = (
            "SELECT s.doc FROM stored s JOIN dirty d ON d.kind = s.kind AND d.id = s.id"
            " WHERE s.kind = ? ORDER BY s.id"
            if dirty
            else "SELECT doc FROM stored WHERE kind = ? ORDER BY id"
        )
        for (doc,) in self.db.execute(sql, (kind,)):
            yield json.loads(doc)

    def prepare_to_save(self) -> None:
        """After this run's writes: its product items become `stored`; run-only tables go.
        A scoped run planned only its dirty items: those replace theirs in `stored`."""
        self.db.execute("BEGIN")
        if self.scoped:
            self.db.execute("DELETE FROM stored WHERE kind = 'schools'")
            self.db.execute("DELETE FROM stored WHERE (kind, id) IN (SELECT kind, id FROM dirty)")
            self.db.execute("INSERT INTO stored SELECT * FROM next_stored")
            self.db.execute("DELETE FROM next_stored")
        else:
            self.db.execute("DROP TABLE stored")
            self.db.execute("ALTER TABLE next_stored RENAME TO stored")
            self.db.execute(
                "CREATE TABLE next_stored(kind TEXT, id TEXT, doc TEXT, PRIMARY KEY (kind, id)) WITHOUT ROWID"
            )
        for index in _SCOPE_INDEXES:
            self.db.execute(index)
        self.db.execute("COMMIT")
        self._clear_run_tables()

    def __enter__(self) -> WorkingSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    # ---- loading the mirror ---------------------------------------------------------

    def load(self, entity: str, rows: Iterable[MirrorRow]) -> int:
        """Stream one entity's mirror rows in; deleted (tobedeleted) records are left out."""
        model = ENTITY_MODELS[entity]
        table, to_row = _LOADERS[entity]
        marks = ",".join("?" * _WIDTH[table])
        sql = f"INSERT OR REPLACE INTO {table} VALUES ({marks})"
        loaded = 0
        it = iter(rows)
        while batch := list(islice(it, BATCH)):
            values = []
            for sourced_id, doc, _version in batch:
                record = _read(model, entity, sourced_id, doc)
                if not record.deleted:
                    values.append(to_row(record))
            self.db.execute("BEGIN")
            self.db.executemany(sql, values)
            self.db.execute("COMMIT")
            loaded += len(values)
        return loaded

    # ---- the rules --------------------------------------------------------------------

    def compute(self) -> None:
        if self.scoped and not scope.worth_scoping(self):
            self._clear_derived()
        if self.scoped:
            scope.compute_changes(self)
        else:
            self._compute_whole()
        self.db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('options', ?), ('today', ?)",
            (options_fingerprint(self.options), self.today.isoformat()),
        )
        self.computed = True

    def _compute_whole(self) -> None:
        db = self.db
        db.execute("BEGIN")
        self.make_schools()
        self.keep_classes()
        self.enrollment_states()
        db.execute("CREATE INDEX IF NOT EXISTS enr_class ON enr(class_id, state)")
        db.execute(
            "UPDATE users SET teaches = 1 WHERE sid IN "
            "(SELECT user_id FROM enr WHERE state = ? AND role = 'teacher')",
            (_IN_FORCE,),
        )
        db.execute("COMMIT")

        self._candidates()
        self._one_user_per_email()
        self._usernames()

    def make_schools(self) -> None:
        db = self.db
        if self.options.auto_create_schools:
            db.execute("INSERT INTO schools SELECT sid, name FROM orgs WHERE type = 'school'")
        else:
            db.execute("INSERT INTO schools VALUES (?, ?)", (MAIN_LOCATION.id, MAIN_LOCATION.name))
        self._school_ids = frozenset(sid for (sid,) in db.execute("SELECT sid FROM schools"))

    def keep_classes(self, among: str = "") -> None:
        """A class of an unknown school is rejected; `among`, a query of sids, limits it."""
        db = self.db
        where = f" WHERE sid IN ({among})" if among else ""
        if self.options.auto_create_schools:
            db.execute(
                "UPDATE classes SET kept = EXISTS (SELECT 1 FROM schools s WHERE s.sid = classes.school_id)"
                + where
            )
        else:
            db.execute("UPDATE classes SET kept = 1" + where)
        rows = db.execute(
            "SELECT sid, school_id FROM classes WHERE kept = 0" + (f" AND sid IN ({among})" if among else "")
        )
        self._issues(
            "ERR", "classes", ((sid, f"unknown school {school!r}") for sid, school in rows.fetchall())
        )

    def enrollment_states(self, among: str = "") -> None:
        """Each enrollment's state: unknown or rejected class, unknown user, in force, ended."""
        db = self.db
        db.execute(
            """UPDATE enr SET state = CASE
                 WHEN NOT EXISTS (SELECT 1 FROM classes c WHERE c.sid = enr.class_id AND c.kept = 1) THEN ?
                 WHEN NOT EXISTS (SELECT 1 FROM users u WHERE u.sid = enr.user_id) THEN ?
                 WHEN end_ IS NULL OR end_ >= ? THEN ?
                 ELSE ? END"""
            + (f" WHERE sid IN ({among})" if among else ""),
            (_UNKNOWN_CLASS, _UNKNOWN_USER, self.today.isoformat(), _IN_FORCE, _ENDED),
        )
        rows = db.execute(
            "SELECT sid, class_id, user_id, state FROM enr WHERE state IN (?, ?)"
            + (f" AND sid IN ({among})" if among else ""),
            (_UNKNOWN_CLASS, _UNKNOWN_USER),
        )
        self._issues(
            "ERR",
            "enrollments",
            (
                (
                    sid,
                    f"unknown or rejected class {cid!r}"
                    if state == _UNKNOWN_CLASS
                    else f"unknown user {uid!r}",
                )
                for sid, cid, uid, state in rows.fetchall()
            ),
        )

    def _candidates(self) -> None:
        """Role and email rules, one user at a time."""
        options = self.options
        errors: list[tuple[str, str]] = []
        candidates: list[tuple[str, str, str, str, str]] = []
        self.db.execute("BEGIN")
        rows = self.db.execute("SELECT sid, ord, role, email, teaches FROM users")
        for sid, ord_, role, email, teaches in rows:
            outcome = candidate(options, sid, ord_, role, email, teaches)
            if isinstance(outcome, str):
                errors.append((sid, outcome))
            elif outcome is not None:
                candidates.append(outcome)
            if len(candidates) >= BATCH:
                self._insert_candidates(candidates)
            if len(errors) >= BATCH:
                self._issues("ERR", "users", errors)
                errors.clear()
        self._insert_candidates(candidates)
        self._issues("ERR", "users", errors)
        self.db.execute("COMMIT")

    def _insert_candidates(self, candidates: list[tuple[str, str, str, str, str]]) -> None:
        # A second cursor: inserting into `cand` does not disturb the read of `users`.
        self.db.executemany("INSERT INTO cand VALUES (?, ?, ?, ?, ?)", candidates)
        candidates.clear()

    def _one_user_per_email(self) -> None:
        """The lowest sourcedId of an email is imported, the others rejected (a sorted scan)."""
        db = self.db
        db.execute("BEGIN")
        db.execute("CREATE INDEX cand_email ON cand(email, ord, sid)")
        errors: list[tuple[str, str]] = []
        losers: list[tuple[str]] = []
        winner_email, winner = None, ""
        to_losers = "INSERT INTO losers SELECT * FROM cand WHERE sid = ?"
        for email, sid in db.execute("SELECT email, sid FROM cand ORDER BY email, ord, sid"):
            if email != winner_email:
                winner_email, winner = email, sid
                continue
            errors.append((sid, f"duplicate email: sourcedId {winner} has it"))
            losers.append((sid,))
            if len(losers) >= BATCH:
                db.executemany(to_losers, losers)
                losers.clear()
        db.executemany(to_losers, losers)
        self._issues("ERR", "users", errors)
        db.execute("DELETE FROM cand WHERE sid IN (SELECT sid FROM losers)")
        db.execute("CREATE INDEX cand_email_lc ON cand(email_lc, ord, sid)")
        db.execute("CREATE INDEX cand_ord ON cand(ord, sid)")
        db.execute("COMMIT")

    def _usernames(self) -> None:
        """`resolve_usernames`, one user at a time in sourcedId order; `taken` is a table."""
        db = self.db
        lookup = self.db.cursor()
        db.execute("BEGIN")
        warnings: list[tuple[str, str]] = []
        names: list[tuple[str, str, str, str, str]] = []
        rows = db.execute(
            "SELECT c.sid, c.ord, c.email, u.username FROM cand c JOIN users u ON u.sid = c.sid"
            " ORDER BY c.ord, c.sid"
        )
        for sid, order, email, source_username in rows:
            name, key, issues = self.username(sid, email, source_username, lambda k: _taken(lookup, k))
            warnings += issues
            lookup.execute("INSERT OR REPLACE INTO taken VALUES (?, ?)", (name.lower(), sid))
            names.append((sid, order, key, name, name.lower()))
            if len(names) >= BATCH:
                lookup.executemany("INSERT INTO uname VALUES (?, ?, ?, ?, ?)", names)
                names.clear()
            if len(warnings) >= BATCH:
                self._issues("WARN", "users", warnings)
                warnings.clear()
        lookup.executemany("INSERT INTO uname VALUES (?, ?, ?, ?, ?)", names)
        self._issues("WARN", "users", warnings)
        db.execute("COMMIT")

    def username(
        self, sid: str, email: str, source_username: str, holder: Callable[[str], str | None]
    ) -> tuple[str, str, list[tuple[str, str]]]:
        """`resolve_usernames` for one user: its username, the name it asked for (lower-cased)
        and its warnings; `holder(key)` is the latest earlier user whose username that is."""
        options = self.options
        name, issue = wanted_username(
            UsernameCandidate(sid, email, source_username),
            use_source=options.username_source,
            rules=options.username_rules,
        )
        warnings = [] if issue is None else [(sid, issue.reason)]
        key = name.lower()
        # resolve_usernames' email_owner is a dict built in sourcedId order: the last one wins.
        owner = self.db.execute(
            "SELECT sid FROM cand WHERE email_lc = ? ORDER BY ord DESC, sid DESC LIMIT 1", (key,)
        ).fetchone()
        reason = username_conflict(sid, holder(key), owner[0] if owner else sid)
        if reason:
            warnings.append((sid, reason))
            name = email
        return name, key, warnings

    def _issues(self, kind: str, entity: str, issues: Iterable[tuple[str, str]]) -> None:
        rows = [(kind, entity, order_key(sid), sid, reason) for sid, reason in issues]
        self.db.executemany("INSERT INTO issues VALUES (?, ?, ?, ?, ?)", rows)

    # ---- the product state, in id order ------------------------------------------------

    def iter_items(self, kind: str, *, dirty: bool = False) -> Iterator[dict[str, Any]]:
        """The kind's product items as stored (`model_dump(mode="json")`), in id order; with
        `dirty`, only those a scoped compute marked (table `dirty`; schools are never scoped)."""
        assert self.computed, "compute() first"
        only = (lambda column: f" JOIN dirty d ON d.kind = '{kind}' AND d.id = {column}") if dirty else None
        if kind == "schools":
            for sid, name in self.db.execute("SELECT sid, name FROM schools ORDER BY sid"):
                yield {"id": sid, "name": name}
        elif kind == "users":
            yield from self._users(only("c.sid") if only else "")
        elif kind == "classes":
            yield from self._classes(only("classes.sid") if only else "")
        elif kind == "enrollments":
            yield from self._enrollments(only("e.sid") if only else "")
        else:
            raise ValueError(f"unknown kind {kind!r}")

    def _users(self, only: str = "") -> Iterator[dict[str, Any]]:
        rows = self.db.execute(
            f"""SELECT c.sid, c.prole, n.username, u.email, u.given, u.family, u.enabled, u.org_ids
               FROM cand c{only} JOIN uname n ON n.sid = c.sid JOIN users u ON u.sid = c.sid ORDER BY c.sid"""
        )
        auto = self.options.auto_create_schools
        for sid, prole, username, email, given, family, enabled, org_ids in rows:
            schools = (
                tuple(sorted({o for o in json.loads(org_ids) if o in self._school_ids}))
                if auto
                else (MAIN_LOCATION.id,)
            )
            yield ProductUser(
                id=sid,
                sourcedId=sid,
                email=email,
                username=username,
                givenName=given,
                familyName=family,
                role=prole,
                status="active" if enabled else "inactive",
                schoolIds=schools,
            ).model_dump(mode="json")

    def _classes(self, only: str = "") -> Iterator[dict[str, Any]]:
        lookup = self.db.cursor()
        options = self.options
        for (doc,) in self.db.execute(f"SELECT doc FROM classes{only} WHERE kept = 1 ORDER BY classes.sid"):
            cls = RosterClass.model_validate_json(doc)
            class_terms = []
            for term_id in cls.termIds:
                row = lookup.execute("SELECT title, start FROM terms WHERE sid = ?", (term_id,)).fetchone()
                if row is not None:
                    class_terms.append((row[0], date.fromisoformat(row[1]) if row[1] else None))
            term_titles = tuple(title for title, _ in class_terms)
            roster = lookup.execute(
                """SELECT e.user_id, e.role, e.begin, EXISTS (SELECT 1 FROM cand c WHERE c.sid = e.user_id)
                   FROM enr e WHERE e.class_id = ? AND e.state = ?""",
                (cls.sourcedId, _IN_FORCE),
            ).fetchall()
            start = class_start_date(
                (date.fromisoformat(begin) if begin else None for _, _, begin, _ in roster),
                (start for _, start in class_terms),
            )
            teachers = {uid for uid, role, _, imported in roster if imported and role != "student"}
            students = {uid for uid, role, _, imported in roster if imported and role == "student"}
            yield product_class(
                cls,
                term_titles=term_titles,
                start=start,
                teacher_ids=teachers,
                student_ids=students,
                options=options,
            ).model_dump(mode="json")

    def _enrollments(self, only: str = "") -> Iterator[dict[str, Any]]:
        rows = self.db.execute(
            f"""SELECT e.sid, e.class_id, e.user_id, e.role FROM enr e{only}
               WHERE e.state = ? AND EXISTS (SELECT 1 FROM cand c WHERE c.sid = e.user_id) ORDER BY e.sid""",
            (_IN_FORCE,),
        )
        # ProductEnrollment's JSON form, built directly: millions of them, all plain strings
        # (the equality tests check it against the model's own dump).
        for sid, class_id, user_id, role in rows:
            yield {"id": sid, "classId": class_id, "userId": user_id, "role": role}

    def has_user_email(self, email: Any) -> bool:
        """Whether an imported (computed) user has exactly this email."""
        row = self.db.execute("SELECT 1 FROM cand WHERE email = ? LIMIT 1", (email,)).fetchone()
        return row is not None

    # ---- errors and warnings, in compute_product's order --------------------------------

    def iter_errors(self) -> Iterator[Issue]:
        rows = self.db.execute(
            "SELECT entity, sid, reason FROM issues WHERE kind = 'ERR' ORDER BY entity, ord, sid, rowid"
        )
        for entity, sid, reason in rows:
            yield Issue(entity=entity, sourcedId=sid, reason=reason)

    def iter_warnings(self) -> Iterator[Issue]:
        rows = self.db.execute(
            "SELECT entity, sid, reason FROM issues WHERE kind = 'WARN' ORDER BY entity, ord, reason, sid, rowid"
        )
        for entity, sid, reason in rows:
            yield Issue(entity=entity, sourcedId=sid, reason=reason)

    def error_counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT entity, COUNT(*) FROM issues WHERE kind = 'ERR' GROUP BY entity")
        return dict(rows.fetchall())


def candidate(
    options: RosterOptions, sid: str, ord_: str, role: str, email: str | None, teaches: int
) -> tuple[str, str, str, str, str] | str | None:
    """A user's `cand` row (sid, ord, email, email_lc, product role), the reason it is
    rejected ("no email", "invalid email"), or None when its role is not imported."""
    prole = product_role(
        role,
        teaches_on_roster=bool(teaches),
        import_admins=options.import_admins,
        role_mapping=options.role_mapping,
    )
    if prole is None:
        return None
    if not email:
        return "no email"
    if not valid_email(email):
        return "invalid email"
    return (sid, ord_, email, email.lower(), prole)


def _taken(lookup: sqlite3.Cursor, key: str) -> str | None:
    row = lookup.execute("SELECT sid FROM taken WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def _read(model: Any, entity: str, sourced_id: str, doc: Any) -> Any:
    """A row's record: the stored JSON read, or a record already read (a revived one)."""
    if not isinstance(doc, str):
        return doc
    try:
        return model.model_validate_json(doc)
    except ValidationError:
        # pydantic's message quotes the stored values: name the record only.
        raise RuntimeError(f"stored {entity} record {sourced_id} cannot be read") from None


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def _org_row(o: Org) -> tuple[Any, ...]:
    return (o.sourcedId, o.type, o.name)


def _term_row(t: AcademicSession) -> tuple[Any, ...]:
    return (t.sourcedId, t.title, _iso(t.startDate))


def _class_row(c: RosterClass) -> tuple[Any, ...]:
    return (c.sourcedId, c.schoolId, c.model_dump_json(), 0)


def _user_row(u: User) -> tuple[Any, ...]:
    return (
        u.sourcedId, order_key(u.sourcedId), u.role, u.email, u.username,
        u.givenName, u.familyName, int(u.enabledUser), json.dumps(list(u.orgIds)), 0,
    )  # fmt: skip


def _enrollment_row(e: Enrollment) -> tuple[Any, ...]:
    return (e.sourcedId, e.classId, e.userId, e.role, _iso(e.beginDate), _iso(e.endDate), 0)


_LOADERS: dict[str, tuple[str, Any]] = {
    "orgs": ("orgs", _org_row),
    "academicSessions": ("terms", _term_row),
    "classes": ("classes", _class_row),
    "users": ("users", _user_row),
    "enrollments": ("enr", _enrollment_row),
}
_WIDTH = {"orgs": 3, "terms": 3, "classes": 4, "users": 10, "enr": 7}
