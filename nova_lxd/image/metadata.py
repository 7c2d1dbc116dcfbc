"""metadata.yaml and templates/ of an LXD unified image, and /etc/os-release parsing."""
import os
import shlex
import time

import yaml

# LXD template files (pongo2 syntax); the backend renders them at create and copy.
TEMPLATES = {
    'hostname.tpl': '{{ container.name }}\n',
    'hosts.tpl': ('127.0.0.1\tlocalhost\n'
                  '127.0.1.1\t{{ container.name }}\n'
                  '::1\tlocalhost ip6-localhost ip6-loopback\n'
                  'ff02::1\tip6-allnodes\n'
                  'ff02::2\tip6-allrouters\n'),
}
TEMPLATE_TARGETS = {
    '/etc/hostname': 'hostname.tpl',
    '/etc/hosts': 'hosts.tpl',
}


def creation_date():
    """Unix time of the build; SOURCE_DATE_EPOCH wins, for reproducible builds."""
    return int(os.environ.get('SOURCE_DATE_EPOCH') or time.time())


def make_metadata(architecture, properties, created=None):
    return {
        'architecture': architecture,
        'creation_date': int(created if created is not None else creation_date()),
        'properties': {k: str(v) for k, v in sorted(properties.items()) if v is not None},
        'templates': {
            target: {'when': ['create', 'copy'], 'template': tpl, 'create_only': False,
                     'properties': {}}
            for target, tpl in sorted(TEMPLATE_TARGETS.items())
        },
    }


def write_metadata_dir(dest, metadata):
    """Write dest/metadata.yaml and dest/templates/*.tpl."""
    os.makedirs(os.path.join(dest, 'templates'), exist_ok=True)
    with open(os.path.join(dest, 'metadata.yaml'), 'w') as f:
        yaml.safe_dump(metadata, f, default_flow_style=False, sort_keys=True)
    for name, text in TEMPLATES.items():
        with open(os.path.join(dest, 'templates', name), 'w') as f:
            f.write(text)


def parse_os_release(text):
    """Parse os-release(5) text (shell-style KEY=value lines) into a dict."""
    result = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#') or '=' not in line:
            continue
        key, _, value = line.partition('=')
        try:
            parts = shlex.split(value)
        except ValueError:
            continue
        result[key.strip()] = parts[0] if parts else ''
    return result


def properties_from_os_release(os_release, variant='default'):
    """Image properties (os, release, description, variant) from a parsed os-release."""
    os_name = os_release.get('NAME') or os_release.get('ID') or 'linux'
    release = (os_release.get('VERSION_CODENAME') or os_release.get('VERSION_ID')
               or os_release.get('BUILD_ID') or 'unknown')
    description = os_release.get('PRETTY_NAME') or '%s %s' % (os_name, release)
    return {
        # capitalised like the images on images.linuxcontainers.org ("Debian", "Ubuntu")
        'os': (os_release.get('ID') or os_name.split()[0]).capitalize(),
        'release': release,
        'description': description,
        'variant': variant,
    }
