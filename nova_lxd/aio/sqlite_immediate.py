"""SQLite transactions that take the write lock when they begin (BEGIN IMMEDIATE).

The all-in-one cloud keeps every service's database in SQLite, and several processes write each
one (Nova's conductor, scheduler and API; Neutron's API and workers). oslo.db opens every
transaction with a plain (deferred) BEGIN: it reads first and asks for the write lock only at its
first UPDATE. If another process wrote in between, SQLite cannot wait its way out (the reader's
snapshot is stale, or waiting could deadlock), so it fails at once with "database is locked",
whatever the busy timeout. Under load that broke Nova's service reports and the compute
manager's instance saves (snapshot, resize and delete failed at random).

BEGIN IMMEDIATE takes the write lock first, where SQLite does honour the busy timeout
(`?timeout=60` in each URL), so concurrent transactions queue instead of failing. Loaded into
every service of .venv-aio by a .pth file that aio/install.sh writes; active only when
NOVA_LXD_AIO_SQLITE_IMMEDIATE is set (aio/cloud.sh sets it for the processes it starts).
"""
from sqlalchemy import event
from sqlalchemy.engine import Engine


def _begin_immediate(conn):
    # oslo.db turns pysqlite's own BEGIN off and emits one in its 'begin' listener unless
    # conn.info says a transaction is open; class-level listeners run first, so this one wins
    if conn.dialect.name == 'sqlite' and 'in_transaction' not in conn.info:
        conn.exec_driver_sql('BEGIN IMMEDIATE')
        conn.info['in_transaction'] = True


def _end(conn):
    conn.info.pop('in_transaction', None)


def install():
    if not event.contains(Engine, 'begin', _begin_immediate):
        event.listen(Engine, 'begin', _begin_immediate)
        event.listen(Engine, 'commit', _end)
        event.listen(Engine, 'rollback', _end)
