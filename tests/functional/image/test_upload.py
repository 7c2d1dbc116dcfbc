"""nova-lxd-image upload through openstacksdk with OS_* auth, against a recorded stand-in for
Keystone v3 + Glance v2 (tests/functional/image/fake_glance.py; no real Glance runs here)."""
import os
import subprocess
import sys

import yaml

from nova_lxd.image import formats
from tests import images
from tests.functional.image import disks
from tests.functional.image.fake_glance import FakeCloud


def _upload(cloud, *args, password=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith('OS_')}
    env.update(cloud.env())
    if password:
        env['OS_PASSWORD'] = password
    return subprocess.run([sys.executable, '-m', 'nova_lxd.image.cli', 'upload'] + list(args),
                          capture_output=True, text=True, env=env, timeout=120)


def _posts(cloud):
    return [body for method, path, _, body in cloud.calls
            if method == 'POST' and path.rstrip('/').endswith('/v2/images')]


def test_unified_tarball_upload_follows_the_convention():
    path = images.busybox_image()
    with FakeCloud() as cloud:
        proc = _upload(cloud, path, '--name', 'busybox', '--public')
        assert proc.returncode == 0, proc.stderr
        [created] = _posts(cloud)
        assert created['name'] == 'busybox'
        assert created['disk_format'] == formats.DISK_FORMAT == 'raw'
        assert created['container_format'] == formats.CONTAINER_FORMAT == 'bare'
        assert created['visibility'] == 'public'
        assert created[formats.PROP_IMAGE_FORMAT] == 'unified'
        assert created['hypervisor_type'] == 'lxc'
        assert created['architecture'] == 'x86_64'
        assert created['os_distro'] == 'busybox'
        assert created['halt_signal'] == 'SIGUSR1'
        [image_id] = cloud.images
        # the bytes Glance stored are the tarball, whole
        assert cloud.data[image_id] == images.fingerprint(path)
        puts = [(p, h) for m, p, h, _ in cloud.calls if m == 'PUT']
        assert puts[0][0].endswith('/v2/images/%s/file' % image_id)
        assert puts[0][1]['Content-Type'] == 'application/octet-stream'
        # every image-API call carried the Keystone token
        assert all(h.get('X-Auth-Token') for m, p, h, _ in cloud.calls
                   if p.startswith('/image/v2'))
        assert image_id in proc.stdout


def test_disk_image_upload_keeps_its_disk_format(tmp_path):
    raw = disks.make_disk(str(tmp_path / 'disk.raw'), [(None, 4)], 'gpt')
    qcow2 = disks.to_qcow2(raw, str(tmp_path / 'disk.qcow2'))
    with FakeCloud() as cloud:
        proc = _upload(cloud, qcow2, '--name', 'cloudimg', '--property', 'os_distro=debian',
                       '--property', 'architecture=x86_64')
        assert proc.returncode == 0, proc.stderr
        [created] = _posts(cloud)
        assert created['disk_format'] == 'qcow2'
        assert created['container_format'] == 'bare'
        assert created['visibility'] == 'private'
        assert formats.PROP_IMAGE_FORMAT not in created       # the driver converts it at boot
        assert created['hypervisor_type'] == 'lxc' and created['os_distro'] == 'debian'


def test_bad_credentials_and_bad_files_are_clear_errors(tmp_path):
    with FakeCloud() as cloud:
        proc = _upload(cloud, images.busybox_image(), '--name', 'x', password='wrong')
        assert proc.returncode == 1
        assert proc.stderr.startswith('nova-lxd-image: Glance upload failed')
        assert 'Traceback' not in proc.stderr
        missing = _upload(cloud, str(tmp_path / 'nope.tar.gz'), '--name', 'x')
        assert missing.returncode == 1 and 'is not a file' in missing.stderr
        fake = tmp_path / 'fake.tar.gz'
        fake.write_bytes(b'\x1f\x8b' + b'garbage' * 10)
        bad = _upload(cloud, str(fake), '--name', 'x')
        assert bad.returncode == 1 and 'not a readable image tarball' in bad.stderr
        assert _posts(cloud) == [] and cloud.images == {}


def test_upload_with_a_clouds_yaml_entry(tmp_path):
    """devstack's way: --os-cloud names a clouds.yaml entry (no OS_* variables at all)."""
    with FakeCloud() as cloud:
        env = cloud.env()
        config = tmp_path / 'clouds.yaml'
        config.write_text(yaml.safe_dump({'clouds': {'fake-admin': {
            'auth': {'auth_url': env['OS_AUTH_URL'], 'username': 'demo',
                     'password': cloud.password, 'project_name': 'demo',
                     'user_domain_name': 'Default', 'project_domain_name': 'Default'},
            'identity_api_version': 3, 'region_name': 'RegionOne'}}}))
        clean = {k: v for k, v in os.environ.items() if not k.startswith('OS_')}
        clean.update(OS_CLIENT_CONFIG_FILE=str(config), NO_PROXY='127.0.0.1',
                     no_proxy='127.0.0.1')
        proc = subprocess.run([sys.executable, '-m', 'nova_lxd.image.cli', 'upload',
                               images.busybox_image(), '--name', 'bb', '--os-cloud',
                               'fake-admin'], capture_output=True, text=True, env=clean,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        [created] = _posts(cloud)
        assert created['name'] == 'bb' and created['lxd_image_format'] == 'unified'
