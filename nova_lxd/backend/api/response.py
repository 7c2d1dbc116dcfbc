"""LXD's three response envelopes (sync, async, error) and the recursion helper."""
import hashlib
import json

import orjson
from aiohttp import web

from nova_lxd.backend.errors import BadRequest, PreconditionFailed


class _Reply(web.Response):
    """A reply that lets go of its body once sent.

    aiohttp keeps a keep-alive connection's last request and reply until the next request
    arrives on it (or the connection closes); a client such as pylxd keeps a connection per URL
    it used, so without this every idle connection would hold its last reply: megabytes for a
    listing of many instances.
    """

    async def write_eof(self, data=b''):
        await super().write_eof(data)
        self.body = None


def encode(value):
    """JSON bytes of a value.

    orjson: the stdlib encoder took a third of the daemon's CPU for a recursion=2 listing of
    300 running instances (1.3 MB of JSON); orjson a tenth of that. What it refuses (an
    integer beyond 64 bits, a non-string key) goes the stdlib's way.
    """
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value).encode()


def _reply(data, status, headers=None):
    return _Reply(body=data, status=status, headers=headers,
                  content_type='application/json', charset='utf-8')


def _json(body, status, headers=None):
    return _reply(encode(body), status, headers)


def _sync_envelope(metadata):
    return {'type': 'sync', 'status': 'Success', 'status_code': 200,
            'operation': '', 'error_code': 0, 'error': '', 'metadata': metadata}


# The sync envelope around a list given as its items' JSON: split where the list goes.
_LIST_HEAD, _LIST_TAIL = encode(_sync_envelope([0])).split(b'[0]')
_LIST_OPEN = _LIST_HEAD + b'['


def sync(metadata=None, status=200, etag=None, headers=None):
    headers = dict(headers or {})
    if etag is not None:
        headers['ETag'] = etag
    return _json(_sync_envelope(metadata), status, headers)


class SyncList:
    """sync() of a list made one item at a time: each is encoded into one buffer as it comes.

    A listing of a thousand instances then never holds their views, nor a thousand encoded
    pieces on the heap (megabytes for 1000 running); past glibc's mmap threshold the buffer
    is a mapping of its own, which goes back to the system whole once the reply is sent.
    """

    def __init__(self):
        self._body = bytearray(_LIST_OPEN)

    def append(self, item):
        if len(self._body) > len(_LIST_OPEN):      # after an item
            self._body += b','
        self._body += encode(item)

    def reply(self):
        self._body += b']' + _LIST_TAIL
        return _reply(self._body, 200)


def async_operation(op):
    """202 with the operation's URL in Location, as pylxd and `lxc` expect."""
    url = op.url
    return _json({'type': 'async', 'status': 'Operation created', 'status_code': 100,
                  'operation': url, 'error_code': 0, 'error': '',
                  'metadata': op.to_dict()}, 202, {'Location': url})


def error(status, message, metadata=None):
    return _json({'type': 'error', 'status': '', 'status_code': 0, 'operation': '',
                  'error_code': status, 'error': message, 'metadata': metadata}, status)


def etag_of(*parts):
    """A strong ETag over the writable fields of a resource, for If-Match."""
    return '"%s"' % hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def recursion(request):
    """The `?recursion=` level: 0 (URLs), 1 (objects) or 2 (objects with their children)."""
    value = request.query.get('recursion', '0')
    try:
        level = int(value)
    except ValueError:
        raise BadRequest('Invalid recursion value %r' % value)
    return max(0, min(level, 2))


def check_etag(request, current):
    """Refuse a PUT/PATCH whose If-Match names an older version of the resource."""
    wanted = request.headers.get('If-Match')
    if wanted and wanted != current:
        raise PreconditionFailed('ETag doesn\'t match: %s vs %s' % (wanted, current))


async def json_body(request, kind=dict):
    """The request body as JSON of the expected type, or a 400 that says what is wrong."""
    raw = await request.read()
    if not raw:
        if kind is dict:
            return {}
        raise BadRequest('Request body is empty')
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequest('Invalid JSON in request body: %s' % exc)
    if not isinstance(body, kind):
        raise BadRequest('Request body must be a JSON %s' % kind.__name__.replace('dict', 'object'))
    return body
