"""The config drive as a read-only directory in the container, built with Nova's metadata classes.

cloud-init's ConfigDrive datasource reads /config-drive as well as a `config-2` filesystem, so a
directory tree (openstack/latest/meta_data.json, user_data, network_data.json, vendor data ...)
bind-mounted there serves containers without an ISO or a block device. ds-identify (cloud-init's
systemd generator, which decides whether cloud-init runs at all) enables the datasource when it
finds /config-drive/openstack/<YYYY-MM-DD>/meta_data.json: Nova's metadata classes write every
dated version, so a stock cloud-init image needs nothing more ([lxd] config_drive_path must stay
/config-drive for it).
"""
import json
import os
import shutil

from oslo_log import log as logging

from nova.api.metadata import base as instance_metadata
from nova.virt import configdrive

from nova_lxd.virt import conf

CONF = conf.CONF
LOG = logging.getLogger(__name__)
DEVICE = 'config-drive'


def required(instance):
    return configdrive.required_by(instance)


def path(instance):
    return os.path.join(CONF.instances_path, instance.uuid, 'config-drive')


def build(instance, injected_files, admin_password, network_info, owner=(0, 0)):
    """Write the config-drive tree; owner is the host (uid, gid) of the container's root."""
    extra_md = {'admin_pass': admin_password} if admin_password else {}
    inst_md = instance_metadata.InstanceMetadata(
        instance, content=injected_files, extra_md=extra_md, network_info=network_info)
    root = path(instance)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root, mode=0o755)
    os.chmod(os.path.dirname(root), 0o711)
    for relative, data in inst_md.metadata_for_config_drive():
        target = os.path.join(root, relative)
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        with open(target, 'wb') as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        os.chmod(target, 0o644)
    uid, gid = owner
    for dirpath, dirnames, filenames in os.walk(root):
        os.chown(dirpath, uid, gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), uid, gid)
    configdrive.update_instance(instance)
    LOG.debug('Config drive written to %s', root, instance=instance)
    return root


def device(instance):
    return {'type': 'disk', 'source': path(instance), 'path': CONF.lxd.config_drive_path,
            'readonly': 'true'}


def root_owner(lxd_config):
    """Host uid/gid of the container's root, from LXD's volatile idmap (0 when privileged)."""
    raw = lxd_config.get('volatile.idmap.next') or lxd_config.get('volatile.last_state.idmap')
    uid = gid = 0
    if raw and lxd_config.get('security.privileged') != 'true':
        for entry in json.loads(raw):
            if entry.get('Nsid') == 0:
                if entry.get('Isuid'):
                    uid = entry['Hostid']
                if entry.get('Isgid'):
                    gid = entry['Hostid']
    return uid, gid


def remove(instance):
    shutil.rmtree(os.path.join(CONF.instances_path, instance.uuid), ignore_errors=True)


def remove_orphans(known_uuids):
    """Config drives of instances this host no longer runs (after a crash mid-delete)."""
    if not os.path.isdir(CONF.instances_path):
        return
    for name in os.listdir(CONF.instances_path):
        drive = os.path.join(CONF.instances_path, name, 'config-drive')
        if name not in known_uuids and os.path.isdir(drive):
            LOG.info('Removing the config drive of vanished instance %s', name)
            shutil.rmtree(drive, ignore_errors=True)
