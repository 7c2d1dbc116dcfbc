"""Copying images between two bundled daemons (source.type image, mode pull), private images by
single-use secret; bad secrets and a pinned-certificate mismatch leave nothing on the target."""
import glob
import hashlib
import os
import uuid

import pylxd
import pytest
import requests

from tests.functional.backend import hostile_tarballs as corpus
from tests.functional.backend.migration_hosts import Hosts


@pytest.fixture(scope='module')
def hosts():
    h = Hosts()
    yield h
    h.destroy()


@pytest.fixture
def clean(hosts):
    yield
    for host in (hosts.a, hosts.b):
        for image in host.local.images.all():
            image.delete(wait=True)


def staged(host):
    return glob.glob(os.path.join(host.daemon.data_dir, 'images', '.staging-*'))


def untrusted_get(host, path):
    return requests.get(host.url + path, verify=host.server_cert_path)


def test_pylxd_copies_a_private_unified_image(hosts, clean):
    data = corpus.busybox_unified(marker=uuid.uuid4().hex.encode())
    image = hosts.a.local.images.create(data, public=False, wait=True)
    image.add_alias('bb-private', 'not copied by pylxd')
    source = hosts.a.remote.images.get(image.fingerprint)
    copied = source.copy(hosts.b.local, wait=True)
    assert copied.fingerprint == hashlib.sha256(data).hexdigest()
    assert copied.public is False
    assert copied.properties == image.properties
    assert hosts.b.local.api.images[copied.fingerprint].export.get().content == data
    # the secret pylxd used is spent: the private image is hidden again from untrusted peers
    assert untrusted_get(hosts.a, '/1.0/images/%s' % image.fingerprint).status_code in (403, 404)
    # and the copy is usable: an instance starts from it on the target
    inst = hosts.b.local.instances.create({'name': 'from-copy-' + uuid.uuid4().hex[:6],
                                           'source': {'type': 'image',
                                                      'fingerprint': copied.fingerprint}},
                                          wait=True)
    try:
        inst.start(wait=True)
        inst.sync()
        assert inst.status == 'Running'
    finally:
        inst.stop(force=True, wait=True)
        inst.delete(wait=True)


def test_split_image_copy_with_the_raw_api(hosts, clean):
    metadata, rootfs = corpus.busybox_split('xz', marker=uuid.uuid4().hex.encode())
    image = hosts.a.local.images.create(rootfs, metadata=metadata, wait=True)
    secret = hosts.a.remote.api.images[image.fingerprint].secret.post(json={}).json()
    token_op = secret['operation']
    secret = secret['metadata']['metadata']['secret']
    # an untrusted peer reads the private image with the secret, and only with it
    assert untrusted_get(hosts.a, '/1.0/images/%s' % image.fingerprint).status_code in (403, 404)
    assert untrusted_get(hosts.a, '/1.0/images/%s?secret=%s' % (
        image.fingerprint, secret)).json()['metadata']['fingerprint'] == image.fingerprint
    op = hosts.b.local.api.images.post(json={
        'source': {'type': 'image', 'mode': 'pull', 'server': hosts.a.url, 'protocol': 'lxd',
                   'certificate': hosts.a.certificate(), 'secret': secret,
                   'fingerprint': image.fingerprint},
        'aliases': [{'name': 'copied-split'}]}).json()
    hosts.b.local.operations.wait_for_operation(op['operation'])
    copied = hosts.b.local.images.get(image.fingerprint)
    assert copied.aliases[0]['name'] == 'copied-split'
    assert copied.size == len(metadata) + len(rootfs)
    # the export used the secret up; its token operation is over
    assert hosts.a.local.operations.get(token_op.split('/')[-1]).status == 'Cancelled'


def test_lxc_image_copy(hosts, clean):
    data = corpus.busybox_unified(marker=uuid.uuid4().hex.encode())
    image = hosts.a.local.images.create(data, public=False, wait=True)
    out = hosts.lxc('image', 'copy', 'hosta:%s' % image.fingerprint, 'hostb:',
                    '--alias', 'via-lxc')
    assert out.returncode == 0, out.stderr
    assert hosts.b.local.images.get_by_alias('via-lxc').fingerprint == image.fingerprint


def _copy_request(hosts, fingerprint, **source):
    body = {'source': dict({'type': 'image', 'mode': 'pull', 'server': hosts.a.url,
                            'protocol': 'lxd', 'certificate': hosts.a.certificate(),
                            'fingerprint': fingerprint}, **source)}
    op = hosts.b.local.api.images.post(json=body).json()
    with pytest.raises(pylxd.exceptions.LXDAPIException) as err:
        hosts.b.local.operations.wait_for_operation(op['operation'])
    return str(err.value)


def test_bad_secret_and_pinned_certificate_mismatch_leave_nothing(hosts, clean):
    data = corpus.busybox_unified(marker=uuid.uuid4().hex.encode())
    image = hosts.a.local.images.create(data, public=False, wait=True)
    message = _copy_request(hosts, image.fingerprint, secret='0' * 64)
    assert 'refused' in message
    # the target's own certificate pinned for the source: the TLS peer does not match
    message = _copy_request(hosts, image.fingerprint, certificate=hosts.b.certificate())
    assert 'pinned certificate' in message
    assert hosts.b.local.images.all() == []
    assert staged(hosts.b) == []
    # a request that can never work is refused at once
    with pytest.raises(pylxd.exceptions.LXDAPIException) as err:
        hosts.b.local.api.images.post(json={'source': {
            'type': 'image', 'mode': 'pull', 'server': 'http://127.0.0.1:1', 'fingerprint': 'ab'}})
    assert err.value.response.status_code == 400 and 'https://' in str(err.value)
