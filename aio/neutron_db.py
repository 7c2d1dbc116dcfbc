"""Create Neutron's schema on SQLite: its alembic migrations ALTER constraints, which SQLite
cannot, so the tables are made from the models at head (as Neutron's own SQLite test fixtures do)
and alembic is stamped at head for `neutron-db-manage` to see a current database.

    neutron_db.py sqlite:///PATH
"""
import sys

import sqlalchemy

from neutron.db.migration.models import head


def main(url):
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        if sqlalchemy.inspect(conn).has_table('alembic_version'):
            return   # made before; neutron-db-manage upgrade keeps it current
    head.get_metadata().create_all(engine)


if __name__ == '__main__':
    main(sys.argv[1])
