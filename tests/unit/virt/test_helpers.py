"""The driver's small pure helpers: image formats, events, VIF devices, config-drive owner, host."""
import json
import subprocess
import tarfile

import pytest

from nova.network import model as network_model
from nova.virt import event as virtevent

from nova_lxd.virt import configdrive
from nova_lxd.virt import events
from nova_lxd.virt import host
from nova_lxd.virt import image
from nova_lxd.virt import password
from nova_lxd.virt import vif
from tests.functional.nova import busybox_image


def test_detect_unified_and_root_tar():
    assert image.detect_format(busybox_image.unified_tarball()) == image.UNIFIED
    for compression in ('gz', 'xz', ''):
        assert image.detect_format(busybox_image.root_tarball(compression)) == image.ROOT_TAR


def test_detect_squashfs_and_garbage(tmp_path):
    sq = tmp_path / 'rootfs.squashfs'
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'hello').write_text('hi')
    subprocess.run(['mksquashfs', str(src), str(sq), '-quiet', '-noappend'], check=True)
    assert image.detect_format(str(sq)) == image.SQUASHFS
    qcow = tmp_path / 'disk.qcow2'
    qcow.write_bytes(b'QFI\xfb' + b'\0' * 1024)
    assert image.detect_format(str(qcow)) is None


def test_metadata_tarball_from_image_properties():
    from nova import objects
    objects.register_all()
    meta = objects.ImageMeta.from_dict({
        'id': 'ce531f90-199f-48c0-816c-13e38010b442', 'name': 'deb',
        'properties': {'os_distro': 'debian', 'hw_architecture': 'x86_64'}})
    import io
    with tarfile.open(fileobj=io.BytesIO(image.metadata_tarball(meta))) as tar:
        data = tar.extractfile('metadata.yaml').read().decode()
    assert 'architecture: x86_64' in data
    assert 'os: debian' in data and 'description: deb' in data


def test_lifecycle_event_mapping():
    uuids = {'instance-00000001': 'u-1'}
    message = {'type': 'lifecycle', 'metadata': {'action': 'instance-stopped',
                                                 'source': '/1.0/instances/instance-00000001'}}
    event = events.lifecycle_event(message, uuids.get)
    assert event.get_instance_uuid() == 'u-1'
    assert event.get_transition() == virtevent.EVENT_LIFECYCLE_STOPPED
    message['metadata']['action'] = 'instance-created'
    assert events.lifecycle_event(message, uuids.get) is None
    message['metadata'].update(action='instance-started', source='/1.0/instances/other')
    assert events.lifecycle_event(message, uuids.get) is None   # not a Nova instance


def test_status_transition_after_a_lost_stream():
    assert events.status_transition('Running', 'Stopped') == virtevent.EVENT_LIFECYCLE_STOPPED
    assert events.status_transition('Stopped', 'Running') == virtevent.EVENT_LIFECYCLE_STARTED
    assert events.status_transition('Frozen', 'Running') == virtevent.EVENT_LIFECYCLE_RESUMED
    assert events.status_transition('Running', 'Frozen') == virtevent.EVENT_LIFECYCLE_PAUSED
    assert events.status_transition('Running', 'Running') is None
    assert events.status_transition(None, 'Running') is None      # new since: Nova made it


def _vif(vif_type, **details):
    network = network_model.Network(id='net', bridge='br-test', label='n', subnets=[],
                                    meta={'mtu': 1400})
    return network_model.VIF(id='ce531f90-199f-48c0-816c-13e38010b442',
                             address='fa:16:3e:4c:2c:30', network=network, type=vif_type,
                             details=details, devname='tapce531f90-19')


def test_nic_devices_carry_mac_and_mtu():
    nic = vif.nic_device(_vif('bridge'), 0)
    assert nic == {'type': 'nic', 'name': 'eth0', 'hwaddr': 'fa:16:3e:4c:2c:30', 'mtu': '1400',
                   'nictype': 'bridged', 'parent': 'br-test', 'host_name': 'tapce531f90-19'}
    tap = vif.nic_device(_vif('tap'), 1)
    assert (tap['nictype'], tap['parent'], tap['name']) == ('physical', 'tince531f90-19', 'eth1')
    hybrid = vif.nic_device(_vif('ovs', ovs_hybrid_plug=True, port_filter=False), 0)
    assert (hybrid['nictype'], hybrid['parent']) == ('bridged', 'qbrce531f90-19')
    plain = vif.nic_device(_vif('ovs', ovs_hybrid_plug=False, port_filter=True), 0)
    assert plain['nictype'] == 'physical'


def test_unsupported_vif_type_is_named():
    from nova import exception
    with pytest.raises(exception.VirtualInterfacePlugException, match='vhostuser'):
        vif.nic_device(_vif('vhostuser'), 0)


def test_plugged_events_only_for_inactive_ports():
    active, waiting = _vif('tap'), _vif('tap')
    active['active'] = True
    waiting['id'] = 'p2'
    waiting['active'] = False
    assert vif.plugged_events([active, waiting]) == [('network-vif-plugged', 'p2')]


def test_config_drive_owner_from_idmap():
    idmap = json.dumps([{'Isuid': True, 'Isgid': False, 'Hostid': 100000, 'Nsid': 0,
                         'Maprange': 65536},
                        {'Isuid': False, 'Isgid': True, 'Hostid': 200000, 'Nsid': 0,
                         'Maprange': 65536}])
    assert configdrive.root_owner({'volatile.idmap.next': idmap}) == (100000, 200000)
    assert configdrive.root_owner({'volatile.idmap.next': idmap,
                                   'security.privileged': 'true'}) == (0, 0)
    assert configdrive.root_owner({}) == (0, 0)


def test_password_helpers(tmp_path):
    assert password.valid_user('root') and not password.valid_user('root; rm -rf /')
    hashed = password.hash_password('s3cret')
    assert hashed.startswith('$6$') and 's3cret' not in hashed
    # the shadow edit reads the hash from stdin and touches only the user's line
    shadow = tmp_path / 'shadow'
    shadow.write_text('root:*:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n')
    command = password.shadow_command('root')
    script = command[2].replace('/etc/shadow', str(shadow))
    subprocess.run(['sh', '-c', script], input=hashed + '\n', text=True, check=True)
    lines = shadow.read_text().splitlines()
    assert lines[0] == 'root:%s:19000:0:99999:7:::' % hashed
    assert lines[1] == 'bin:*:19000:0:99999:7:::'
    assert hashed not in ' '.join(command)


def test_host_stats_shapes():
    stats = host.cpu_stats()
    assert set(stats) == {'kernel', 'idle', 'user', 'iowait', 'frequency'}
    assert stats['idle'] > 0
    assert 'load average' in host.uptime()
