"""Image templates (metadata.yaml `templates`), rendered on create, copy and start.

The syntax is the useful subset of LXD's pongo2 templates: {{ container.name }} /
{{ instance.name }} and other instance fields, {{ properties.x }}, {{ trigger }},
{{ config_get("key", "default") }}; {% ... %} tags are dropped.
"""
import logging
import os
import re

import yaml

from nova_lxd.backend.instances.paths import resolve_in_rootfs

LOG = logging.getLogger(__name__)
# libyaml's loader when PyYAML has it: the pure Python one was ~7% of a busybox start
_LOADER = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)
_VAR = re.compile(r'{{\s*(.*?)\s*}}')
_TAG = re.compile(r'{%.*?%}', re.S)
_CONFIG_GET = re.compile(r'^config_get\(\s*"([^"]*)"\s*(?:,\s*"([^"]*)"\s*)?\)$')


def load_metadata(instance_dir):
    path = os.path.join(instance_dir, 'metadata.yaml')
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return yaml.load(f, Loader=_LOADER) or {}


def render_text(text, instance, trigger, properties):
    fields = {'name': instance['name'], 'architecture': instance.get('architecture', ''),
              'privileged': str(instance.get('privileged', False)).lower(),
              'ephemeral': str(instance.get('ephemeral', False)).lower()}
    config = instance.get('config', {})

    def value(match):
        expr = match.group(1)
        cfg = _CONFIG_GET.match(expr)
        if cfg:
            return config.get(cfg.group(1), cfg.group(2) or '')
        head, _, tail = expr.partition('.')
        if head in ('container', 'instance'):
            return fields.get(tail, '')
        if head == 'properties':
            return str(properties.get(tail, ''))
        if expr == 'trigger':
            return trigger
        return ''
    return _VAR.sub(value, _TAG.sub('', text))


def render(instance_dir, rootfs, trigger, instance, owner):
    """Render every template whose `when` holds `trigger`; owner is the host (uid, gid) of root."""
    templates = (load_metadata(instance_dir).get('templates') or {})
    for target, spec in sorted(templates.items()):
        if trigger not in (spec.get('when') or []):
            continue
        source = os.path.join(instance_dir, 'templates', os.path.basename(spec.get('template', '')))
        if not os.path.isfile(source):
            LOG.warning('Template %s for %s is missing', source, target)
            continue
        dest = resolve_in_rootfs(rootfs, target)
        if spec.get('create_only') and os.path.exists(dest):
            continue
        with open(source) as f:
            text = render_text(f.read(), instance, trigger, spec.get('properties') or {})
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.islink(dest):
            os.unlink(dest)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        os.chown(dest, *owner)
