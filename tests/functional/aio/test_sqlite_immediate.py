"""The all-in-one cloud's SQLite fix (nova_lxd/aio/sqlite_immediate.py), on oslo.db engines as
the services make them: a transaction that read before another process's write can still write.

Each scenario runs in a child process: the fix installs a process-wide SQLAlchemy listener,
which must not reach the other tests of this worker.
"""
import subprocess
import sys
import tempfile
import textwrap

SCENARIO = textwrap.dedent('''
    import sqlite3, sys, threading, time
    from oslo_db.sqlalchemy import engines
    if sys.argv[2] == 'immediate':
        from nova_lxd.aio import sqlite_immediate
        sqlite_immediate.install()
    path = sys.argv[1]
    sqlite3.connect(path).execute('PRAGMA journal_mode=WAL')
    url = 'sqlite:///%s?timeout=30' % path
    a, b = engines.create_engine(url), engines.create_engine(url)
    with a.begin() as c:
        c.exec_driver_sql('CREATE TABLE t (n INTEGER)')
        c.exec_driver_sql('INSERT INTO t VALUES (0)')
    read = threading.Event()

    def other_writer():
        read.wait()
        with b.begin() as c:
            c.exec_driver_sql('UPDATE t SET n = n + 1')

    writer = threading.Thread(target=other_writer)
    writer.start()
    try:
        with a.begin() as c:   # read, let the other process write, then write
            c.exec_driver_sql('SELECT n FROM t').scalar()
            read.set()
            time.sleep(1)
            c.exec_driver_sql('UPDATE t SET n = n + 10')
        outcome = 'ok'
    except Exception as e:
        outcome = str(e).splitlines()[0]
    writer.join()
    with a.connect() as c:
        print(outcome, c.exec_driver_sql('SELECT n FROM t').scalar())
''')


def _run(mode):
    with tempfile.TemporaryDirectory(prefix='nova-lxd-aio-sqlite-') as tmp:
        proc = subprocess.run([sys.executable, '-c', SCENARIO, tmp + '/db.sqlite', mode],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_deferred_transactions_fail_without_the_fix():
    # the failure the cloud saw: "database is locked" at once, though the busy timeout is 30 s
    *error, total = _run('deferred')
    assert 'database is locked' in ' '.join(error)
    assert total == '1'


def test_immediate_transactions_queue_and_both_writes_land():
    assert _run('immediate') == ['ok', '11']
