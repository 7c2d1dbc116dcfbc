"""The daemon's OpenAPI document: true to its routes; schemathesis finds no 5xx through it."""
import collections
import socket

import hypothesis
import pytest
import requests
import urllib3
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.openapi import from_dict

from nova_lxd.backend.api import make_app, openapi
from tests.backend_fixture import BackendDaemon

# Fuzzed operations that would change the host beyond the private daemon's data dir (bridges,
# dnsmasq, listening addresses, pools on loop devices) or pull from a remote: left out here; their
# bad-input refusals have their own tests (tests/functional/backend/test_network.py,
# test_storage.py, test_server.py, test_images.py).
NOT_FUZZED = {
    ('PUT', '/1.0'), ('PATCH', '/1.0'),
    ('POST', '/1.0/networks'), ('PUT', '/1.0/networks/{name}'),
    ('PATCH', '/1.0/networks/{name}'), ('POST', '/1.0/networks/{name}'),
    ('DELETE', '/1.0/networks/{name}'),
    ('POST', '/1.0/storage-pools'), ('DELETE', '/1.0/storage-pools/{pool}'),
    ('PUT', '/1.0/storage-pools/{pool}'), ('PATCH', '/1.0/storage-pools/{pool}'),
    ('POST', '/1.0/images'),
    # long-lived streams: nothing to fuzz in a websocket upgrade
    ('GET', '/1.0/events'), ('GET', '/1.0/operations/{id}/websocket'),
}
EXAMPLES_PER_OPERATION = 8
# The second pass aims the path at resources that exist, so bodies reach the services' checks;
# these would remove or rename its targets and end the pass early.
NOT_AIMED = {('DELETE', '/1.0/instances/{name}'), ('POST', '/1.0/instances/{name}'),
             ('DELETE', '/1.0/containers/{name}'), ('POST', '/1.0/containers/{name}'),
             ('DELETE', '/1.0/instances/{name}/snapshots/{snap}'),
             ('POST', '/1.0/instances/{name}/snapshots/{snap}'),
             ('DELETE', '/1.0/containers/{name}/snapshots/{snap}'),
             ('POST', '/1.0/containers/{name}/snapshots/{snap}'),
             ('DELETE', '/1.0/profiles/{name}'), ('POST', '/1.0/profiles/{name}')}
EXISTING = {'name': 'fuzz', 'snap': 'snap0', 'pool': 'default', 'type': 'custom'}


def _routes(router):
    return {(r.method, r.resource.canonical) for r in router.routes()
            if r.method != 'HEAD' and r.resource is not None}


def test_document_matches_the_routes(client):
    doc = client.api.session.get(client.api._api_endpoint + '/openapi.json').json()
    documented = {(method.upper(), path) for path, ops in doc['paths'].items() for method in ops}
    assert documented == _routes(make_app(None).router)
    # every hand-written request schema belongs to a route that exists (no stale schema)
    folded = {(m, openapi.canonical(p)) for m, p in documented}
    assert set(openapi.REQUEST_BODIES) <= folded
    assert set(openapi.QUERY_PARAMETERS) <= folded
    assert doc['paths']['/1.0/instances']['post']['requestBody']['content'][
        'application/json']['schema']['required'] == ['name', 'source']


@pytest.fixture(scope='module')
def fuzz_daemon():
    daemon = BackendDaemon()
    daemon.start()
    yield daemon
    daemon.destroy()


BASE_URL = 'http://nova-lxd.invalid'


class _UnixConnection(urllib3.connection.HTTPConnection):
    def __init__(self, path, **kwargs):
        super().__init__('localhost', **kwargs)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout if isinstance(self.timeout, (int, float)) else 60)
        self.sock.connect(self.socket_path)


class _UnixPool(urllib3.HTTPConnectionPool):
    def __init__(self, path):
        super().__init__('localhost')
        self.socket_path = path

    def _new_conn(self):
        return _UnixConnection(self.socket_path, timeout=60)


class _UnixAdapter(requests.adapters.HTTPAdapter):
    """Sends every request of BASE_URL to the daemon's unix socket (schemathesis wants http://)."""

    def __init__(self, path):
        super().__init__()
        self.pool = _UnixPool(path)

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        return self.pool

    def close(self):
        self.pool.close()
        super().close()


def _session(daemon):
    session = requests.Session()
    session.mount(BASE_URL, _UnixAdapter(daemon.socket))
    return session


def _check(response, label):
    assert response.status_code < 500, '%s -> %s %s' % (label, response.status_code,
                                                        response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert body.get('type') == 'error', (label, body)
        assert body.get('error_code') == response.status_code, (label, body)
        assert isinstance(body.get('error'), str) and body['error'], (label, body)


def _aim(case):
    if case.path_parameters:
        case.path_parameters = {k: EXISTING.get(k, v) for k, v in case.path_parameters.items()}
    return case


def _pass(schema, session, base_url, aimed, statuses, failures):
    tried = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key in NOT_FUZZED or (aimed and (key in NOT_AIMED or '{' not in operation.path)):
            continue
        tried += 1
        # schema-valid requests and deliberately invalid ones (wrong types, missing fields)
        strategy = operation.as_strategy(GenerationMode.POSITIVE) | \
            operation.as_strategy(GenerationMode.NEGATIVE)

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  derandomize=True, phases=[hypothesis.Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy.map(_aim) if aimed else strategy)
        def fuzz(case):
            response = case.call(base_url=base_url, session=session, timeout=60)
            statuses[response.status_code] += 1
            label = '%s %s %r %r' % (case.method, case.formatted_path, case.query, case.body)
            _check(response, label)

        try:
            fuzz()
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0][:600])
    return tried


def test_schemathesis_finds_no_server_error(fuzz_daemon):
    client = fuzz_daemon.client()
    session = _session(fuzz_daemon)
    base_url = BASE_URL
    schema = from_dict(session.get(base_url + '/1.0/openapi.json').json())
    failures = []
    statuses = collections.Counter()
    tried = _pass(schema, session, base_url, False, statuses, failures)
    instance = client.instances.create({'name': 'fuzz', 'source': {'type': 'none'}}, wait=True)
    instance.snapshots.create('snap0', wait=True)
    aimed = _pass(schema, session, base_url, True, statuses, failures)
    assert tried > 80 and aimed > 30
    print(sorted(statuses.items()))
    # the fuzzing reached both the handlers' happy paths and their refusals
    assert sum(n for code, n in statuses.items() if code < 300) > 50
    assert sum(n for code, n in statuses.items() if 400 <= code < 500) > 200
    assert not failures, '\n'.join(failures)
    assert 'Unhandled error' not in fuzz_daemon.log()
    # still serving, and still answering in LXD's shape
    assert client.host_info['api_version'] == '1.0'
    assert session.get(base_url + '/1.0/instances').json()['type'] == 'sync'


@pytest.mark.parametrize('method,path,body,words', [
    # found by schemathesis: both were unhandled 500s
    ('PATCH', '/instances/{name}', {'profiles': [{}]}, 'Profile names must be strings'),
    ('POST', '/certificates', {'certificate': True}, 'certificate must be a string'),
])
def test_fuzzer_findings_are_lxd_errors(fuzz_daemon, method, path, body, words):
    client = fuzz_daemon.client()
    if not client.instances.exists('finding'):
        client.instances.create({'name': 'finding', 'source': {'type': 'none'}}, wait=True)
    resp = client.api.session.request(method, client.api._api_endpoint
                                      + path.format(name='finding'), json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()['error_code'] == 400 and words in resp.json()['error']
    assert client.instances.get('finding').profiles == ['default']
