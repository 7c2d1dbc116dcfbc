"""Persistent state in SQLite: one document table for every resource kind, plus server config.

Resources (instances, images, profiles, pools, networks, ...) are stored as JSON documents keyed by
(kind, name): the REST objects are documents already, and this keeps one code path for all of them.
The schema carries a version (PRAGMA user_version) and upgrades itself through MIGRATIONS.
"""
import contextlib
import json
import sqlite3
import threading

MIGRATIONS = [
    # 1: the initial schema
    """
    CREATE TABLE config (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE resources (kind TEXT NOT NULL, name TEXT NOT NULL, doc TEXT NOT NULL,
                            PRIMARY KEY (kind, name));
    CREATE TABLE operations (id TEXT PRIMARY KEY, description TEXT NOT NULL);
    """,
]


class Database:
    def __init__(self, path):
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        with self._lock:
            self._conn.execute('PRAGMA journal_mode=WAL')
            self._conn.execute('PRAGMA synchronous=NORMAL')
            self._migrate()

    def _migrate(self):
        version = self._conn.execute('PRAGMA user_version').fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.transaction():
                for statement in filter(str.strip, script.split(';')):
                    self._conn.execute(statement)
                self._conn.execute('PRAGMA user_version=%d' % number)

    @property
    def schema_version(self):
        return self._conn.execute('PRAGMA user_version').fetchone()[0]

    @contextlib.contextmanager
    def transaction(self):
        with self._lock:
            self._conn.execute('BEGIN IMMEDIATE')
            try:
                yield self
            except BaseException:
                self._conn.execute('ROLLBACK')
                raise
            self._conn.execute('COMMIT')

    def close(self):
        with self._lock:
            self._conn.close()

    # -- documents ---------------------------------------------------------------------------
    def get(self, kind, name):
        with self._lock:
            row = self._conn.execute('SELECT doc FROM resources WHERE kind=? AND name=?',
                                     (kind, name)).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, kind, prefix=None):
        return list(self.each(kind, prefix))

    def each(self, kind, prefix=None):
        """The documents of `kind` in name order, read at once and decoded one at a time.

        A listing of a thousand instances then holds their JSON text, not a thousand decoded
        documents: those are small objects that would spread over new arenas of CPython's
        allocator, which the objects made meanwhile keep after the listing is done.
        """
        with self._lock:
            if prefix is None:
                rows = self._conn.execute(
                    'SELECT doc FROM resources WHERE kind=? ORDER BY name', (kind,)).fetchall()
            else:
                rows = self._conn.execute(
                    'SELECT doc FROM resources WHERE kind=? AND substr(name,1,?)=? ORDER BY name',
                    (kind, len(prefix), prefix)).fetchall()
        return (json.loads(text) for text, in rows)

    def names(self, kind):
        with self._lock:
            return [r[0] for r in self._conn.execute(
                'SELECT name FROM resources WHERE kind=? ORDER BY name', (kind,))]

    def put(self, kind, name, doc):
        with self._lock:
            self._conn.execute('INSERT OR REPLACE INTO resources (kind, name, doc) VALUES (?,?,?)',
                               (kind, name, json.dumps(doc, sort_keys=True)))

    def insert(self, kind, name, doc):
        """Insert a new document; False if one of that name exists already."""
        with self._lock:
            try:
                self._conn.execute('INSERT INTO resources (kind, name, doc) VALUES (?,?,?)',
                                   (kind, name, json.dumps(doc, sort_keys=True)))
            except sqlite3.IntegrityError:
                return False
        return True

    def delete(self, kind, name):
        with self._lock:
            self._conn.execute('DELETE FROM resources WHERE kind=? AND name=?', (kind, name))

    def rename(self, kind, old, new):
        with self._lock:
            self._conn.execute('UPDATE resources SET name=? WHERE kind=? AND name=?',
                               (new, kind, old))

    # -- server config -----------------------------------------------------------------------
    def config(self):
        with self._lock:
            return dict(self._conn.execute('SELECT key, value FROM config'))

    def set_config(self, values):
        with self.transaction():
            self._conn.execute('DELETE FROM config')
            self._conn.executemany('INSERT INTO config (key, value) VALUES (?,?)',
                                   sorted(values.items()))

    # -- operations in flight (so a restart can report them failed) ----------------------------
    def operation_started(self, op_id, description):
        with self._lock:
            self._conn.execute('INSERT OR REPLACE INTO operations VALUES (?,?)',
                               (op_id, description))

    def operation_finished(self, op_id):
        with self._lock:
            self._conn.execute('DELETE FROM operations WHERE id=?', (op_id,))

    def take_interrupted_operations(self):
        with self._lock:
            rows = self._conn.execute('SELECT id, description FROM operations').fetchall()
            self._conn.execute('DELETE FROM operations')
        return rows
