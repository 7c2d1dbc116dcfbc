"""A small Sphinx directive that renders doc/source/support-matrix.ini, in Nova's format.

Sections `[driver.<name>]` name the drivers (here one: lxd); sections `[operation.<name>]` hold
`title`, `status` (mandatory, choice, optional), `notes`, `cli`, and per driver
`driver.<name>` (complete, partial, missing), `driver-notes.<name>` and - our addition -
`driver-tests.<name>`, the pytest node ids that back a complete or partial claim.
"""
import configparser
import os

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList

STATUSES = ('complete', 'partial', 'missing')


def load(path):
    """The matrix as (drivers {key: title}, operations [dict]) - also used by the tests."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    if not parser.read(path):
        raise ValueError('cannot read %s' % path)
    drivers = {s.split('.', 1)[1]: parser[s]['title'] for s in parser.sections()
               if s.startswith('driver.')}
    operations = []
    for section in parser.sections():
        if not section.startswith('operation.'):
            continue
        op = dict(parser[section])
        op['key'] = section.split('.', 1)[1]
        for driver in drivers:
            status = op.get('driver.' + driver)
            if status not in STATUSES:
                raise ValueError('%s: driver.%s must be one of %s, not %r'
                                 % (section, driver, ', '.join(STATUSES), status))
            op.setdefault('driver-tests.' + driver, '')
        operations.append(op)
    return drivers, operations


def tests_of(op, driver):
    return op.get('driver-tests.' + driver, '').split()


class SupportMatrix(Directive):
    required_arguments = 1

    def run(self):
        env = self.state.document.settings.env
        path = os.path.join(env.srcdir, self.arguments[0])
        env.note_dependency(path)
        drivers, operations = load(path)
        lines = []
        for driver, title in drivers.items():
            counts = {s: sum(op['driver.' + driver] == s for op in operations) for s in STATUSES}
            lines += ['**%s**: %d complete, %d partial, %d missing.' % (
                title, counts['complete'], counts['partial'], counts['missing']), '']
            lines += ['.. list-table::', '   :header-rows: 1', '   :widths: 25 10 10 55', '',
                      '   * - Feature', '     - Nova status', '     - %s' % title,
                      '     - Why, and the tests that back it']
            for op in operations:
                notes = op.get('driver-notes.' + driver, '').split()
                cell = ' '.join(notes) or '-'
                tests = tests_of(op, driver)
                lines += ['   * - %s' % op['title'], '     - %s' % op['status'],
                          '     - %s' % op['driver.' + driver], '     - %s' % cell]
                if tests:
                    lines.append('')
                lines += ['       * ``%s``' % test for test in tests]
            lines.append('')
        node = nodes.section()
        node.document = self.state.document
        self.state.nested_parse(StringList(lines, source=path), self.content_offset, node)
        return node.children


def setup(app):
    app.add_directive('support_matrix', SupportMatrix)
    return {'parallel_read_safe': True, 'version': '1'}
