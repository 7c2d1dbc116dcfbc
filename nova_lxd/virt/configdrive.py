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
import threading

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


def _write(instance, injected_files, admin_password, network_info):
    """Write the config-drive tree (owned by host root) into its directory, which exists."""
    extra_md = {'admin_pass': admin_password} if admin_password else {}
    inst_md = instance_metadata.InstanceMetadata(
        instance, content=injected_files, extra_md=extra_md, network_info=network_info)
    root = path(instance)
    for relative, data in inst_md.metadata_for_config_drive():
        target = os.path.join(root, relative)
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        with open(target, 'wb') as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        os.chmod(target, 0o644)
    configdrive.update_instance(instance)
    LOG.debug('Config drive written to %s', root, instance=instance)


def _chown(root, owner):
    uid, gid = owner
    for dirpath, dirnames, filenames in os.walk(root):
        os.chown(dirpath, uid, gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), uid, gid)


class Pending:
    """A config drive being written in a thread while the backend creates the container.

    Its directory exists from the start (the container's disk device names it); finish() waits
    for the tree and gives it to the container's root, whose host uid is known once the
    container exists.
    """

    def __init__(self, instance, injected_files, admin_password, network_info):
        self.root = path(instance)
        shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(self.root, mode=0o755)
        os.chmod(os.path.dirname(self.root), 0o711)
        self._error = None
        self._thread = threading.Thread(
            target=self._run, args=(instance, injected_files, admin_password, network_info),
            name='config-drive-%s' % instance.uuid, daemon=True)
        self._thread.start()

    def _run(self, *args):
        try:
            _write(*args)
        except Exception as exc:   # raised in the spawn, by finish()
            self._error = exc

    def finish(self, owner):
        """owner: the host (uid, gid) of the container's root (root_owner)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        _chown(self.root, owner)
        return self.root

    def abandon(self):
        """A failed spawn: let the writing end, so that remove() removes all of it."""
        self._thread.join()


def prepare(instance, injected_files, admin_password, network_info):
    """Start writing the config drive; see Pending."""
    return Pending(instance, injected_files, admin_password, network_info)


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
