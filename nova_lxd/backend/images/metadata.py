"""metadata.yaml of an image: parse, check every field's type, normalise the architecture."""
import posixpath

import yaml

from nova_lxd.backend.errors import BadRequest

# LXD's architecture names, and the aliases it accepts for them (lxd/shared/osarch).
ARCHITECTURES = {
    'x86_64': ('x86_64', 'amd64'),
    'i686': ('i686', 'i386', 'i586', 'x86'),
    'aarch64': ('aarch64', 'arm64', 'arm64v8'),
    'armv7l': ('armv7l', 'armhf', 'armel', 'arm', 'armv7', 'armv6l'),
    'ppc64le': ('ppc64le', 'ppc64el'),
    'ppc': ('ppc', 'powerpc'),
    'ppc64': ('ppc64', 'powerpc64'),
    's390x': ('s390x',),
    'mips': ('mips',),
    'mips64': ('mips64',),
    'riscv64': ('riscv64',),
}
_ARCH_BY_ALIAS = {alias: name for name, aliases in ARCHITECTURES.items() for alias in aliases}

TEMPLATE_TRIGGERS = ('create', 'copy', 'start', 'rename')
_TEMPLATE_KEYS = {'when', 'template', 'properties', 'create_only', 'uid', 'gid', 'mode'}
_TOP_KEYS = {'architecture', 'creation_date', 'expiry_date', 'properties', 'templates'}
_SAFE_LOADER = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)


def canonical_architecture(value):
    try:
        return _ARCH_BY_ALIAS[value]
    except (KeyError, TypeError):
        raise BadRequest('Invalid image metadata: unknown architecture %r' % (value,))


def _string_map(value, where):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest('Invalid image metadata: %s must be a map' % where)
    clean = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise BadRequest('Invalid image metadata: %s has a non-string key %r' % (where, key))
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise BadRequest('Invalid image metadata: %s.%s must be a string' % (where, key))
        clean[key] = str(item)
    return clean


def _timestamp(value, key):
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest('Invalid image metadata: %s must be a Unix timestamp' % key)
    return value


def _template(path, spec, template_files):
    if not isinstance(path, str) or not path.startswith('/') or \
            '..' in path.split('/') or posixpath.normpath(path) != path:
        raise BadRequest('Invalid image metadata: template target %r must be a clean absolute '
                         'path' % (path,))
    if not isinstance(spec, dict):
        raise BadRequest('Invalid image metadata: templates[%r] must be a map' % path)
    unknown = set(spec) - _TEMPLATE_KEYS
    if unknown:
        raise BadRequest('Invalid image metadata: templates[%r] has unknown key(s) %s'
                         % (path, ', '.join(sorted(map(str, unknown)))))
    when = spec.get('when', [])
    if not isinstance(when, list) or any(w not in TEMPLATE_TRIGGERS for w in when):
        raise BadRequest('Invalid image metadata: templates[%r].when must be a list of %s'
                         % (path, ', '.join(TEMPLATE_TRIGGERS)))
    name = spec.get('template')
    if not isinstance(name, str) or not name or '/' in name or name in ('.', '..'):
        raise BadRequest('Invalid image metadata: templates[%r].template must name a file in '
                         'templates/' % path)
    if template_files is not None and name not in template_files:
        raise BadRequest('Invalid image metadata: template file templates/%s is missing' % name)
    create_only = spec.get('create_only', False)
    if not isinstance(create_only, bool):
        raise BadRequest('Invalid image metadata: templates[%r].create_only must be a boolean'
                         % path)
    clean = {'when': list(when), 'template': name, 'create_only': create_only,
             'properties': _string_map(spec.get('properties'), 'templates[%r].properties' % path)}
    for key in ('uid', 'gid', 'mode'):
        if key in spec:
            clean[key] = str(spec[key])
    return clean


def parse(raw, template_files=None):
    """Validate metadata.yaml bytes; return a clean dict.

    template_files: names present under templates/ (None: do not check they exist).
    """
    try:
        # libyaml (C) builds the same safe types as safe_load, in a tenth of the time
        doc = yaml.load(raw, Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise BadRequest('Invalid image metadata: metadata.yaml is not valid YAML: %s'
                         % str(exc).replace('\n', ' '))
    if not isinstance(doc, dict):
        raise BadRequest('Invalid image metadata: metadata.yaml must be a map')
    unknown = set(map(str, doc)) - _TOP_KEYS
    if unknown:
        raise BadRequest('Invalid image metadata: unknown key(s) %s in metadata.yaml'
                         % ', '.join(sorted(unknown)))
    if 'architecture' not in doc:
        raise BadRequest('Invalid image metadata: architecture is missing')
    templates = doc.get('templates')
    templates = {} if templates is None else templates
    if not isinstance(templates, dict):
        raise BadRequest('Invalid image metadata: templates must be a map')
    return {
        'architecture': canonical_architecture(doc['architecture']),
        'creation_date': _timestamp(doc.get('creation_date'), 'creation_date'),
        'expiry_date': _timestamp(doc.get('expiry_date'), 'expiry_date'),
        'properties': _string_map(doc.get('properties'), 'properties'),
        'templates': {path: _template(path, spec, template_files)
                      for path, spec in templates.items()},
    }


def dump(metadata):
    """metadata.yaml text for a clean metadata dict (as written when publishing)."""
    doc = {'architecture': metadata['architecture'],
           'creation_date': metadata['creation_date'],
           'properties': metadata.get('properties', {}),
           'templates': metadata.get('templates', {})}
    if metadata.get('expiry_date'):
        doc['expiry_date'] = metadata['expiry_date']
    return yaml.safe_dump(doc, default_flow_style=False)
