"""The Tempest tests the all-in-one cloud leaves out, each with its reason.

The list lives in the support matrix (section [tempest-exclusions] of
doc/source/support-matrix.ini: test id = reason), so the reason is documented where the driver's
features are. A key names one test, or a class or module for all of its tests.

    python3 aio/tempest_exclusions.py     # the list as `tempest run --exclude-list` reads it
"""
import configparser
import os
import re

MATRIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'doc', 'source',
                      'support-matrix.ini')
SECTION = 'tempest-exclusions'


def load(path=MATRIX):
    """{test id: reason}."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str    # test ids are case sensitive
    if not parser.read(path):
        raise ValueError('cannot read %s' % path)
    exclusions = dict(parser[SECTION]) if parser.has_section(SECTION) else {}
    for test, reason in exclusions.items():
        if not reason.strip():
            raise ValueError('%s: %s is excluded without a reason' % (path, test))
    return {test: ' '.join(reason.split()) for test, reason in exclusions.items()}


def regex(test):
    """The regex of one entry: the test itself, or every test under the class or module."""
    return '^%s([.\\[]|$)' % re.escape(test)


def explained(test_id, exclusions):
    """The reason a run's test (id with or without its [attributes]) may fail, or None."""
    for test, reason in exclusions.items():
        if re.match(regex(test), test_id):
            return reason
    return None


if __name__ == '__main__':
    for test, reason in load().items():
        print('# ' + reason)
        print(regex(test))
