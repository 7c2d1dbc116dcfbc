"""A tiny stand-in for Keystone v3 and Glance's image API v2 on 127.0.0.1.

No real Glance runs in these tests (glance from PyPI is a heavy install): this server answers
just the calls openstacksdk makes to upload an image (identity and image version discovery,
token issue, find by name, create, upload data, show) and records each one, so the tests can
check exactly what `nova-lxd-image upload` sends.
"""
import hashlib
import http.server
import json
import threading
import uuid

TOKEN = 'fake-token-' + uuid.uuid4().hex


class FakeCloud:
    def __init__(self, password='secret'):
        self.password = password
        self.calls = []          # (method, path, headers dict, parsed json or None)
        self.images = {}         # id -> image dict
        self.data = {}           # id -> sha256 of the uploaded bytes
        handler = type('Handler', (_Handler,), {'cloud': self})
        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.server.server_address[1]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def env(self):
        """OS_* variables pointing openstacksdk at this cloud."""
        return {'OS_AUTH_URL': self.url + '/identity/v3', 'OS_USERNAME': 'demo',
                'OS_PASSWORD': self.password, 'OS_PROJECT_NAME': 'demo',
                'OS_USER_DOMAIN_NAME': 'Default', 'OS_PROJECT_DOMAIN_NAME': 'Default',
                'OS_IDENTITY_API_VERSION': '3', 'OS_REGION_NAME': 'RegionOne',
                'NO_PROXY': '127.0.0.1', 'no_proxy': '127.0.0.1'}


class _Handler(http.server.BaseHTTPRequestHandler):
    cloud = None
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def _reply(self, status, body=None, headers=None):
        data = json.dumps(body).encode() if body is not None else b''
        self.send_response(status)
        if body is not None:
            self.send_header('Content-Type', 'application/json')
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self):
        length = int(self.headers.get('Content-Length') or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get('Transfer-Encoding') == 'chunked':
            chunks = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b''.join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return b''

    def _record(self, parsed):
        self.cloud.calls.append((self.command, self.path, dict(self.headers), parsed))

    def do_GET(self):
        self._dispatch(None)

    def do_POST(self):
        self._dispatch(self._body())

    def do_PUT(self):
        self._dispatch(self._body())

    def do_PATCH(self):
        self._dispatch(self._body())

    def do_DELETE(self):
        self._dispatch(None)

    def _dispatch(self, raw):
        path = self.path.split('?')[0].rstrip('/')
        is_json = raw and 'json' in (self.headers.get('Content-Type') or '')
        self._record(json.loads(raw) if is_json else
                     ({'sha256': hashlib.sha256(raw).hexdigest(), 'length': len(raw)}
                      if raw else None))
        base = self.cloud.url
        if path == '/identity/v3' and self.command == 'GET':
            return self._reply(200, {'version': {
                'id': 'v3.14', 'status': 'stable', 'updated': '2020-04-07T00:00:00Z',
                'links': [{'rel': 'self', 'href': base + '/identity/v3/'}],
                'media-types': [{'base': 'application/json',
                                 'type': 'application/vnd.openstack.identity-v3+json'}]}})
        if path == '/identity/v3/auth/tokens' and self.command == 'POST':
            return self._token(json.loads(raw))
        if not path.startswith('/image'):
            return self._reply(404, {'error': 'not found'})
        if self.headers.get('X-Auth-Token') != TOKEN and path != '/image':
            return self._reply(401, {'error': 'no token'})
        if path == '/image':
            return self._reply(300, {'versions': [{
                'id': 'v2.16', 'status': 'CURRENT',
                'links': [{'rel': 'self', 'href': base + '/image/v2/'}]}]})
        return self._image_api(path[len('/image'):], raw)

    def _token(self, body):
        password = body['auth']['identity']['password']['user']['password']
        if password != self.cloud.password:
            return self._reply(401, {'error': {'code': 401, 'message': 'bad credentials',
                                               'title': 'Unauthorized'}})
        return self._reply(201, {'token': {
            'methods': ['password'], 'expires_at': '2099-01-01T00:00:00.000000Z',
            'issued_at': '2026-01-01T00:00:00.000000Z',
            'user': {'id': 'u1', 'name': 'demo', 'domain': {'id': 'default', 'name': 'Default'}},
            'project': {'id': 'p1', 'name': 'demo',
                        'domain': {'id': 'default', 'name': 'Default'}},
            'roles': [{'id': 'r1', 'name': 'member'}],
            'catalog': [{'type': 'image', 'name': 'glance', 'id': 's1', 'endpoints': [
                {'id': 'e1', 'interface': 'public', 'region': 'RegionOne',
                 'region_id': 'RegionOne', 'url': self.cloud.url + '/image'}]}]}},
            headers={'X-Subject-Token': TOKEN})

    def _image_api(self, path, raw):
        parts = path.strip('/').split('/')
        if parts[:2] != ['v2', 'images']:
            return self._reply(404, {'error': 'not found'})
        if len(parts) == 2 and self.command == 'GET':
            name = None
            if '?' in self.path:
                from urllib.parse import parse_qs
                name = parse_qs(self.path.split('?', 1)[1]).get('name', [None])[0]
            found = [i for i in self.cloud.images.values() if name in (None, i['name'])]
            return self._reply(200, {'images': found})
        if len(parts) == 2 and self.command == 'POST':
            body = json.loads(raw)
            image = dict(body, id=str(uuid.uuid4()), status='queued', size=None,
                         checksum=None, os_hash_algo=None, os_hash_value=None,
                         file='/v2/images/%s/file', self='/v2/images/%s',
                         schema='/v2/schemas/image', tags=body.get('tags', []))
            self.cloud.images[image['id']] = image
            return self._reply(201, image)
        image = self.cloud.images.get(parts[2]) if len(parts) > 2 else None
        if image is None:
            return self._reply(404, {'message': 'No image found'})
        if len(parts) == 3 and self.command == 'GET':
            return self._reply(200, image)
        if len(parts) == 4 and parts[3] == 'file' and self.command == 'PUT':
            digest = hashlib.sha256(raw).hexdigest()
            self.cloud.data[image['id']] = digest
            image.update(status='active', size=len(raw), os_hash_algo='sha256',
                         os_hash_value=digest, checksum=hashlib.md5(raw).hexdigest())
            return self._reply(204)
        if len(parts) == 3 and self.command == 'DELETE':
            del self.cloud.images[parts[2]]
            return self._reply(204)
        return self._reply(405, {'error': 'method not allowed'})
