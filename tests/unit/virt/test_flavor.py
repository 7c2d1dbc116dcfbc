"""flavor.instance_config: flavor, extra specs and VIFs -> LXD config and devices."""
import pytest

from nova import exception
from nova import objects

from nova_lxd.virt import flavor

objects.register_all()
UUID = '9f1c2a3e-4b5d-4c6e-8f70-1a2b3c4d5e6f'


def _instance(**specs):
    fl = objects.Flavor(vcpus=2, memory_mb=512, root_gb=10, ephemeral_gb=0, swap=0,
                        extra_specs=specs)
    inst = objects.Instance(uuid=UUID, id=7, flavor=fl)
    return inst, fl


def test_basic_limits_and_identity():
    inst, fl = _instance()
    out = flavor.instance_config(inst, fl, 'default', 'dir')
    config = out['config']
    assert out['name'] == inst.name
    assert config['limits.cpu'] == '2'
    assert config['limits.memory'] == '512MiB'
    assert config['environment.product_name'] == 'OpenStack Nova'
    assert config[flavor.UUID_KEY] == UUID
    assert out['devices']['root'] == {'type': 'disk', 'path': '/', 'pool': 'default'}


def test_root_size_only_where_the_pool_enforces_it():
    inst, fl = _instance()
    assert flavor.instance_config(inst, fl, 'p', 'btrfs')['devices']['root']['size'] == '10GB'
    assert 'size' not in flavor.instance_config(inst, fl, 'p', 'dir')['devices']['root']


def test_cpu_quota_and_period_become_an_allowance():
    inst, fl = _instance(**{'quota:cpu_quota': '50000', 'quota:cpu_period': '100000'})
    config = flavor.instance_config(inst, fl, 'p', 'dir')['config']
    assert config['limits.cpu.allowance'] == '50ms/100ms'


def test_cpu_shares_become_a_percentage():
    inst, fl = _instance(**{'quota:cpu_shares': '512'})
    assert flavor.instance_config(inst, fl, 'p', 'dir')['config']['limits.cpu.allowance'] == '50%'


def test_disk_quotas_limit_the_root_disk():
    inst, fl = _instance(**{'quota:disk_read_bytes_sec': '1048576',
                            'quota:disk_write_iops_sec': '200',
                            'quota:disk_total_bytes_sec': '4096'})
    root = flavor.instance_config(inst, fl, 'p', 'dir')['devices']['root']
    assert root['limits.read'] == '1048576B'
    assert root['limits.write'] == '200iops'
    assert root['limits.max'] == '4096B'


def test_vif_quotas_limit_every_nic():
    inst, fl = _instance(**{'quota:vif_inbound_average': '1000',
                            'quota:vif_outbound_average': '250'})
    nics = {'eth0': {'type': 'nic', 'nictype': 'bridged', 'parent': 'br0'}}
    eth0 = flavor.instance_config(inst, fl, 'p', 'dir', nics=nics)['devices']['eth0']
    assert eth0['limits.ingress'] == '8000kbit'
    assert eth0['limits.egress'] == '2000kbit'
    assert eth0['parent'] == 'br0'


def test_lxd_extra_specs():
    inst, fl = _instance(**{'lxd:nested_allowed': 'true', 'lxd:privileged_allowed': 'False',
                            'lxd:isolated': 'yes'})
    config = flavor.instance_config(inst, fl, 'p', 'dir')['config']
    assert config['security.nesting'] == 'true'
    assert config['security.privileged'] == 'false'
    assert config['security.idmap.isolated'] == 'true'


def test_unknown_lxd_extra_spec_is_named():
    inst, fl = _instance(**{'lxd:nesting': 'true'})
    with pytest.raises(exception.InvalidInput, match='lxd:nesting'):
        flavor.instance_config(inst, fl, 'p', 'dir')


@pytest.mark.parametrize('spec', [{'lxd:isolated': 'perhaps'}, {'quota:cpu_quota': 'lots'},
                                  {'quota:disk_read_iops_sec': '-5'}])
def test_bad_values_are_refused(spec):
    inst, fl = _instance(**spec)
    with pytest.raises(exception.InvalidInput, match=list(spec)[0]):
        flavor.instance_config(inst, fl, 'p', 'dir')
