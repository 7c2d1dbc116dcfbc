"""Image aliases: names that point at an image fingerprint (db kind 'image-alias')."""
from nova_lxd.backend.errors import BadRequest, Conflict, NotFound

KIND = 'image-alias'


def _check_name(name):
    if not isinstance(name, str) or not name or name != name.strip() or \
            any(c in name for c in '\n\r\t') or name in ('.', '..') or ':' in name:
        raise BadRequest('Invalid alias name %r' % (name,))
    return name


def _check_description(value):
    if value is None:
        return ''
    if not isinstance(value, str):
        raise BadRequest('Alias description must be a string')
    return value


class AliasRegistry:
    def __init__(self, db, events, image_exists):
        self.db = db
        self.events = events
        self._image_exists = image_exists

    @staticmethod
    def url(name):
        return '/1.0/images/aliases/%s' % name

    def list(self):
        return self.db.list(KIND)

    def get(self, name):
        alias = self.db.get(KIND, name)
        if alias is None:
            raise NotFound('Image alias not found')
        return alias

    def for_image(self, fingerprint):
        return [a for a in self.list() if a['target'] == fingerprint]

    def create(self, name, target, description=''):
        name = _check_name(name)
        if not isinstance(target, str) or not self._image_exists(target):
            raise NotFound('Image %r not found' % (target,))
        doc = {'name': name, 'target': target, 'type': 'container',
               'description': _check_description(description)}
        if not self.db.insert(KIND, name, doc):
            raise Conflict('Alias %r already exists' % name)
        self.events.lifecycle('image-alias-created', self.url(name), target=target)
        return doc

    def update(self, name, values, merge):
        doc = self.get(name)
        if not isinstance(values, dict):
            raise BadRequest('Request body must be a JSON object')
        if 'target' in values or not merge:
            target = values.get('target')
            if not isinstance(target, str) or not self._image_exists(target):
                raise BadRequest('Alias target %r is not an image' % (target,))
            doc['target'] = target
        if 'description' in values or not merge:
            doc['description'] = _check_description(values.get('description'))
        self.db.put(KIND, name, doc)
        self.events.lifecycle('image-alias-updated', self.url(name), target=doc['target'])
        return doc

    def rename(self, name, new_name):
        doc = self.get(name)
        new_name = _check_name(new_name)
        with self.db.transaction():
            if self.db.get(KIND, new_name) is not None:
                raise Conflict('Alias %r already exists' % new_name)
            doc['name'] = new_name
            self.db.delete(KIND, name)
            self.db.insert(KIND, new_name, doc)
        self.events.lifecycle('image-alias-renamed', self.url(new_name), old_name=name)
        return doc

    def delete(self, name):
        self.get(name)
        self.db.delete(KIND, name)
        self.events.lifecycle('image-alias-deleted', self.url(name))

    def delete_for_image(self, fingerprint):
        for alias in self.for_image(fingerprint):
            self.delete(alias['name'])
