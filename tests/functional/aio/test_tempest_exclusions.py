"""The support matrix's [tempest-exclusions] (aio/tempest_exclusions.py): what the all-in-one
Tempest run leaves out, and what test_cloud.py accepts as an explained failure. No cloud needed.
"""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCRIPT = os.path.join(REPO, 'aio', 'tempest_exclusions.py')
CONSOLE = ('tempest.api.compute.servers.test_server_actions.ServerActionsTestOtherB.'
           'test_get_console_output_with_unlimited_size')


@pytest.fixture(scope='module')
def exclusions():
    spec = importlib.util.spec_from_file_location('tempest_exclusions', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_support_matrix_explains_each_exclusion(exclusions):
    reasons = exclusions.load()
    assert CONSOLE in reasons
    assert all(len(reason.split()) >= 5 for reason in reasons.values()), reasons


def test_a_test_id_matches_with_its_attributes_only(exclusions):
    reasons = {CONSOLE: 'why'}
    assert exclusions.explained(CONSOLE + '[id-1,smoke]', reasons) == 'why'
    assert exclusions.explained(CONSOLE, reasons) == 'why'
    assert exclusions.explained(CONSOLE + '_longer', reasons) is None
    # a class entry covers its tests
    cls = CONSOLE.rsplit('.', 1)[0]
    assert exclusions.explained(CONSOLE, {cls: 'why'}) == 'why'
    assert exclusions.explained(cls + 'X.test_a', {cls: 'why'}) is None


def test_an_exclusion_without_a_reason_is_refused(exclusions, tmp_path):
    matrix = tmp_path / 'matrix.ini'
    matrix.write_text('[tempest-exclusions]\n%s=\n' % CONSOLE)
    with pytest.raises(ValueError, match='without a reason'):
        exclusions.load(str(matrix))


def test_the_exclude_list_tempest_reads(exclusions):
    out = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True,
                         check=True).stdout
    regexes = [line for line in out.splitlines() if line and not line.startswith('#')]
    assert len(regexes) == len(exclusions.load())
    assert any(re.match(r, CONSOLE + '[id-1]') for r in regexes)
