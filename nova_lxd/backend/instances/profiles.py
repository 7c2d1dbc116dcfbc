"""daemon.profiles: profile CRUD, rename, used_by, and the `default` profile."""
import logging

from nova_lxd.backend.errors import BadRequest, Conflict, NotFound
from nova_lxd.backend.instances import config as cfg
from nova_lxd.backend.instances import devices as device_registry
from nova_lxd.backend.instances.common import NAME

LOG = logging.getLogger(__name__)


class ProfileService:
    def __init__(self, daemon):
        self.daemon = daemon
        self.db = daemon.db

    def prepare(self):
        """Create `default` at first start, with a root disk on the default pool."""
        if self.db.get('profile', 'default') is None:
            pool = self.daemon.storage.default_pool()
            self.db.insert('profile', 'default', {
                'name': 'default', 'description': 'Default LXD profile', 'config': {},
                'devices': {'root': {'type': 'disk', 'path': '/', 'pool': pool}}})

    def _doc(self, name):
        doc = self.db.get('profile', name)
        if doc is None:
            raise NotFound('Profile not found')
        return doc

    def names(self):
        return self.db.names('profile')

    def get(self, name):
        doc = dict(self._doc(name))
        doc['used_by'] = ['/1.0/instances/%s' % i
                          for i in self.daemon.instances.used_by_profile(name)]
        return doc

    def etag(self, name):
        doc = self._doc(name)
        return [doc.get('config'), doc.get('description'), doc.get('devices')]

    @staticmethod
    def _clean(body, name):
        if not isinstance(name, str) or not NAME.match(name):
            raise BadRequest('Invalid profile name %r' % (name,))
        devices = body.get('devices') or {}
        device_registry.validate_devices(devices)
        description = body.get('description') or ''
        if not isinstance(description, str):
            raise BadRequest('description must be a string')
        return {'name': name, 'description': description,
                'config': cfg.validate_config(body.get('config') or {}), 'devices': devices}

    def create(self, body):
        doc = self._clean(body, body.get('name'))
        device_registry.check_on_host(self.daemon, doc['devices'])
        if not self.db.insert('profile', doc['name'], doc):
            raise Conflict('Profile %r already exists' % doc['name'])
        self.daemon.events.lifecycle('profile-created', '/1.0/profiles/%s' % doc['name'])

    def update(self, name, body, merge):
        """Blocking (applies the change to running instances using the profile)."""
        old = self._doc(name)
        if merge:
            config = dict(old['config'], **(body.get('config') or {}))
            body = {'config': {k: v for k, v in config.items() if v not in (None, '')},
                    'devices': dict(old['devices'], **(body.get('devices') or {})),
                    'description': body.get('description', old['description'])}
        new = self._clean(body, name)
        device_registry.check_on_host(self.daemon, new['devices'])
        instances = self.daemon.instances
        instances.check_profile_change(name, new)
        self.db.put('profile', name, new)
        try:
            instances.profile_changed(name, old)
        except Exception:
            self.db.put('profile', name, old)
            raise
        self.daemon.events.lifecycle('profile-updated', '/1.0/profiles/%s' % name)

    def rename(self, name, new_name):
        self._doc(name)
        if name == 'default':
            raise BadRequest('The default profile cannot be renamed')
        if not isinstance(new_name, str) or not NAME.match(new_name):
            raise BadRequest('Invalid profile name %r' % (new_name,))
        if self.db.get('profile', new_name) is not None:
            raise Conflict('Profile %r already exists' % new_name)
        with self.db.transaction():
            doc = self._doc(name)
            doc['name'] = new_name
            self.db.delete('profile', name)
            self.db.put('profile', new_name, doc)
            for instance in self.daemon.instances.used_by_profile(name):
                inst = self.db.get('instance', instance)
                inst['profiles'] = [new_name if p == name else p for p in inst['profiles']]
                self.db.put('instance', instance, inst)
        self.daemon.events.lifecycle('profile-renamed', '/1.0/profiles/%s' % new_name,
                                     old_name=name)

    def delete(self, name):
        self._doc(name)
        if name == 'default':
            raise BadRequest('The default profile cannot be deleted')
        users = self.daemon.instances.used_by_profile(name)
        if users:
            raise BadRequest('Profile is currently in use by %s' % ', '.join(users))
        self.db.delete('profile', name)
        self.daemon.events.lifecycle('profile-deleted', '/1.0/profiles/%s' % name)
