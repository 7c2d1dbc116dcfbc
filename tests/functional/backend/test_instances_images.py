"""Instances created from images: busybox (busybox init) and Debian with systemd as init."""
import json
import os
import time

import pytest

from tests import images
from tests.functional.backend.busybox_rootfs import attach, cleanup, host_root, rootfs_path, unique


def _image(client, path):
    fingerprint = images.fingerprint(path)
    if not client.images.exists(fingerprint):
        with open(path, 'rb') as f:
            client.images.create(f.read(), wait=True)
    return fingerprint


@pytest.fixture(scope='module')
def busybox(backend):
    client = backend.client()
    fingerprint = _image(client, images.busybox_image())
    alias = unique('bb')
    client.images.get(fingerprint).add_alias(alias, 'test alias')
    return fingerprint, alias


def _lxc_config(backend, name):
    with open(os.path.join(backend.data_dir, 'containers', name, 'config')) as f:
        return f.read()


def test_from_alias_shifted_templated_and_halts_cleanly(client, backend, busybox):
    fingerprint, alias = busybox
    name = unique()
    inst = client.instances.create({'name': name, 'source': {'type': 'image', 'alias': alias}},
                                   wait=True)
    try:
        assert inst.config['volatile.base_image'] == fingerprint
        assert inst.config['image.os'] == 'BusyBox'
        rootfs = rootfs_path(backend, name)
        # the volume was shifted into the container's id range when it was created
        assert os.stat(os.path.join(rootfs, 'bin/busybox')).st_uid == host_root()[0]
        # ... from the pool's one shifted copy of the image (cloned, not shifted per instance)
        pool_dir = os.path.dirname(os.path.dirname(os.path.dirname(rootfs)))
        assert [e for e in os.listdir(os.path.join(pool_dir, 'images'))
                if e.startswith(fingerprint + '@idmap-%d-' % host_root()[0])]
        with open(os.path.join(rootfs, 'etc/hostname')) as f:
            assert f.read().strip() == name      # the image's `create` template
        inst.start(wait=True)
        assert 'lxc.signal.halt = 10\n' in _lxc_config(backend, name)   # SIGUSR1 for busybox
        assert attach(backend, name, 'hostname').strip() == name
        inst.stop(wait=True)          # clean stop through the halt signal
        inst.sync()
        assert inst.status == 'Stopped'
    finally:
        cleanup(inst)


def test_from_fingerprint_prefix(client, backend, busybox):
    fingerprint, _ = busybox
    inst = client.instances.create({'name': unique(), 'source': {
        'type': 'image', 'fingerprint': fingerprint[:12]}}, wait=True)
    try:
        assert inst.config['volatile.base_image'] == fingerprint
    finally:
        cleanup(inst)


def test_unknown_image_refused_and_nothing_left(client, backend):
    name = unique()
    resp = client.api.session.post(client.api._api_endpoint + '/instances', data=json.dumps(
        {'name': name, 'source': {'type': 'image', 'alias': 'no-such-alias'}}))
    assert resp.status_code in (400, 404)
    assert not client.instances.exists(name)
    assert not [p for p in os.listdir(os.path.join(backend.data_dir, 'storage-pools'))
                if os.path.exists(os.path.join(backend.data_dir, 'storage-pools', p,
                                               'containers', name))]


def test_debian_systemd_reaches_running_and_stops_cleanly(client, backend):
    fingerprint = _image(client, images.debian_image())
    name = unique('deb')
    inst = client.instances.create({'name': name, 'source': {
        'type': 'image', 'fingerprint': fingerprint}}, wait=True)
    try:
        inst.start(wait=True)
        state = ''
        for _ in range(120):
            out = os.popen('lxc-attach -P %s -n %s -- systemctl is-system-running 2>/dev/null'
                           % (os.path.join(backend.data_dir, 'containers'), name)).read()
            state = out.strip()
            if state in ('running', 'degraded'):
                break
            time.sleep(0.5)
        assert state == 'running', attach(backend, name, 'systemctl', '--failed', '--no-pager')
        # (systemd renames itself from "init" a moment after it starts)
        assert attach(backend, name, 'cat', '/proc/1/comm').strip() == 'systemd'
        assert attach(backend, name, 'hostname').strip() == name
        # lxcfs: the container's /proc/meminfo follows limits.memory (minbase has no `free`)
        inst.config['limits.memory'] = '300MiB'
        inst.save(wait=True)
        meminfo = attach(backend, name, 'cat', '/proc/meminfo')
        assert meminfo.split('MemTotal:')[1].split()[0] == str(300 * 1024)
        assert 'lxc.signal.halt = %d' % (34 + 3) in _lxc_config(backend, name)  # SIGRTMIN+3
        inst.stop(wait=True)
        inst.sync()
        assert inst.status == 'Stopped'
    finally:
        cleanup(inst)


def test_privileged_from_image_keeps_host_root_ownership(client, backend, busybox):
    fingerprint, _ = busybox
    name = unique()
    inst = client.instances.create({'name': name, 'config': {'security.privileged': 'true'},
                                    'source': {'type': 'image', 'fingerprint': fingerprint}},
                                   wait=True)
    try:
        assert os.stat(os.path.join(rootfs_path(backend, name), 'bin/busybox')).st_uid == 0
        inst.start(wait=True)
        assert attach(backend, name, 'id', '-u').strip() == '0'
    finally:
        cleanup(inst)
