"""Every hostile or broken image is refused with a 400 that names the problem and leaves nothing:
no file in the images directory, no record, no alias, no cached copy in a pool."""
import os
import subprocess

import pytest
from requests_toolbelt import MultipartEncoder

from tests.functional.backend import hostile_tarballs as corpus

UNIFIED = corpus.hostile_unified()
SPLIT = corpus.hostile_split()


def _state(backend, client):
    images_dir = os.path.join(backend.data_dir, 'images')
    pool_images = os.path.join(backend.data_dir, 'storage-pools', 'default', 'images')
    return (sorted(os.listdir(images_dir)), sorted(os.listdir(pool_images)),
            client.api.images.get().json()['metadata'],
            client.api.images.aliases.get().json()['metadata'])


def _post(client, data, headers=None):
    return client.api.session.post(client.api._api_endpoint + '/images', data=data,
                                   headers=headers or {})


@pytest.mark.parametrize('case,data,words', UNIFIED, ids=[c[0] for c in UNIFIED])
def test_hostile_unified_refused(backend, client, case, data, words):
    before = _state(backend, client)
    resp = _post(client, data)
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body['type'] == 'error' and body['error_code'] == 400
    assert words in body['error']
    assert _state(backend, client) == before


@pytest.mark.parametrize('case,metadata,rootfs,words', SPLIT, ids=[c[0] for c in SPLIT])
def test_hostile_split_refused(backend, client, case, metadata, rootfs, words):
    before = _state(backend, client)
    form = MultipartEncoder({'metadata': ('metadata', metadata, 'application/octet-stream'),
                             'rootfs': ('rootfs', rootfs, 'application/octet-stream')})
    resp = _post(client, form, {'Content-Type': form.content_type})
    assert resp.status_code == 400, resp.text
    assert words in resp.json()['error']
    assert _state(backend, client) == before


def test_split_upload_with_parts_swapped_is_refused(backend, client):
    metadata, rootfs = corpus.busybox_split()
    before = _state(backend, client)
    form = MultipartEncoder({'rootfs': ('rootfs', rootfs, 'application/octet-stream'),
                             'metadata': ('metadata', metadata, 'application/octet-stream')})
    resp = _post(client, form, {'Content-Type': form.content_type})
    assert resp.status_code == 400 and "expected 'metadata'" in resp.json()['error']
    assert _state(backend, client) == before


def test_stock_lxc_client_reports_the_refusal(backend, client, tmp_path):
    before = _state(backend, client)
    case = dict((c[0], c[1]) for c in UNIFIED)['write-through-absolute-symlink']
    path = tmp_path / 'evil.tar.gz'
    path.write_bytes(case)
    proc = subprocess.run(['lxc', 'image', 'import', str(path), '--alias', 'evil'],
                          env=dict(os.environ, LXD_DIR=backend.data_dir), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0
    assert 'not a directory' in proc.stderr
    assert _state(backend, client) == before
