"""Setting a user's password inside a container, for images with and without chpasswd."""
import re
import warnings

with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    import crypt

_USER = re.compile(r'^[a-z_][a-z0-9_-]{0,31}$')


def valid_user(user):
    return bool(_USER.match(user))


def hash_password(password):
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))


def shadow_command(user):
    """Replace user's hash in /etc/shadow with one read from stdin (never on a command line)."""
    return ['sh', '-c', 'IFS= read -r h && grep -q "^%(u)s:" /etc/shadow && '
            'sed -i "s|^%(u)s:[^:]*:|%(u)s:$h:|" /etc/shadow' % {'u': user}]
