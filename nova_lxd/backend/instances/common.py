"""Small helpers shared by the instances modules."""
import datetime
import re

from nova_lxd.backend.errors import BadRequest

NAME = re.compile(r'^[a-zA-Z0-9][a-zA-Z0-9-]{0,62}$')


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def daemon_owned(key):
    """volatile keys only the daemon may write (they describe the rootfs's on-disk state)."""
    return key.startswith(('volatile.idmap.', 'volatile.last_state.')) or \
        key in ('volatile.uuid', 'volatile.base_image', 'volatile.apply_template')


def check_name(name):
    if not isinstance(name, str) or not NAME.match(name) or name.isdigit() or \
            name.endswith('-'):
        raise BadRequest('Invalid instance name %r: letters, digits and -, at most 63, not '
                         'only digits' % (name,))
    return name
