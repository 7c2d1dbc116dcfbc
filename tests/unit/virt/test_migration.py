"""migration.py decisions that need no backend: which host, refusals and their messages."""
import pytest

from nova import exception
from nova import objects

from nova_lxd.virt import conf
from nova_lxd.virt import migration

objects.register_all()


class _State:
    def __init__(self, usage):
        self.disk = {'root': {'usage': usage}} if usage is not None else {}


class _Container:
    """Just what check_root_fits reads: status, state() and exec of du."""

    def __init__(self, usage=None, du_kib=None, status='Stopped'):
        self._usage, self._du, self.status = usage, du_kib, status
        self.ran = []

    def state(self):
        return _State(self._usage)

    def execute(self, command):
        self.ran.append(command)
        return type('R', (), {'exit_code': 0, 'stdout': '%d\t/\n' % self._du, 'stderr': ''})


def _instance(root_gb):
    return objects.Instance(uuid='9f1c2a3e-4b5d-4c6e-8f70-1a2b3c4d5e6f', id=3,
                            flavor=objects.Flavor(root_gb=root_gb, name='old'))


def _flavor(root_gb):
    return objects.Flavor(root_gb=root_gb, name='new')


def test_shrink_below_used_refused_with_rollback():
    with pytest.raises(exception.InstanceFaultRollback) as err:
        migration.check_root_fits(_Container(usage=3 * 1024 ** 3), _instance(10), _flavor(2))
    message = str(err.value.inner_exception)
    assert 'holds 3.0 GiB, more than the 2 GB of flavor new' in message


def test_shrink_above_used_and_growth_allowed():
    migration.check_root_fits(_Container(usage=1024 ** 3), _instance(10), _flavor(2))
    migration.check_root_fits(_Container(du_kib=1024 * 1024, status='Running'),
                              _instance(10), _flavor(2))
    container = _Container(usage=50 * 1024 ** 3)
    migration.check_root_fits(container, _instance(10), _flavor(20))   # growth: not measured
    migration.check_root_fits(container, _instance(10), _flavor(0))    # 0: no size at all


def test_running_container_measured_inside_not_by_a_lagging_pool_count():
    # the pool counts 1 GiB (its accounting not yet committed), the guest holds 3 GiB
    container = _Container(usage=1024 ** 3, du_kib=3 * 1024 * 1024, status='Running')
    with pytest.raises(exception.InstanceFaultRollback):
        migration.check_root_fits(container, _instance(10), _flavor(2))
    assert container.ran == [['du', '-skx', '/']]


def test_stopped_container_without_a_pool_count_is_not_measured():
    container = _Container(usage=None)
    migration.check_root_fits(container, _instance(10), _flavor(2))
    assert container.ran == []


def test_peer_client_needs_an_https_endpoint():
    conf.CONF.set_override('migration_endpoints', {'h2': 'http://10.0.0.2:8443'}, 'lxd')
    try:
        for host in ('h2', 'h3'):
            with pytest.raises(exception.MigrationError) as err:
                migration.peer_client(host)
            assert 'no HTTPS endpoint for host %s in [lxd] migration_endpoints' % host \
                in str(err.value)
    finally:
        conf.CONF.clear_override('migration_endpoints', 'lxd')


def test_live_migration_refusal_is_actionable():
    with pytest.raises(exception.MigrationPreCheckError) as err:
        migration.refuse_stateful(_instance(1))
    message = str(err.value)
    assert 'CRIU' in message
    assert 'keeps running' in message
    assert 'allow_stateless_live_migration' in message
    assert 'server migrate' in message


def test_revert_copy_name():
    assert migration.revert_name(_instance(1)) == 'instance-00000003-resize'
