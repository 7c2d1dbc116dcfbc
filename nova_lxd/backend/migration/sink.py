"""The target side: POST /1.0/instances with source.type "migration".

Pull mode: the target dials source.operation with source.secrets, pinning
source.certificate. Push mode: the creating operation is a websocket
operation whose metadata holds our "control" and "fs" secrets; the source (or a relaying client)
connects to it.

Control protocol (JSON text frames on "control", our own, between two bundled daemons; LXD speaks
protobuf MigrationHeader/MigrationControl messages there, so LXD <-> bundled migration is NOT
wire-compatible):
    source -> target  {"type": "header", "formats": [...], "snapshots": [records oldest first],
                       "idmap": <volatile.last_state.idmap of the rootfs>, "running": bool}
    target -> source  {"type": "accept", "format": "btrfs"|"tar"}
    (volumes on "fs", see volumes.py)
    target -> source  {"type": "result", "success": bool, "message": ..., "target_starts": bool}
    source -> target  {"type": "finished"}   (after a success, once the source side is settled)
    either side       {"type": "abort", "message": ...} when it gives up

The new instance's record exists (marked _creating) from the request on; whatever fails, its
volume, snapshots and records are removed, so nothing half-made stays behind. The rootfs is shifted
to the id map this host allocates if it differs from the source's. A container that was running
on the source and whose requested config still says so (pylxd's migrate() sends the source's
config; `lxc move`/`lxc copy` strip volatile.last_state.power and `lxc move` starts the instance
itself) is started here, and the source then leaves its copy stopped (a move: pylxd deletes it);
otherwise the source starts its copy again (a copy; `lxc move` then deletes it). Either way
exactly one of the two runs afterwards.
"""
import logging

from nova_lxd.backend.errors import ApiError, BadRequest
from nova_lxd.backend.instances import idmap as idmaps
from nova_lxd.backend.instances.snapshots import check_name as check_snapshot_name
from nova_lxd.backend.migration import volumes
from nova_lxd.backend.migration.channels import CONNECT_TIMEOUT, Channels, TransferError
from nova_lxd.backend.storage.system import parse_size

LOG = logging.getLogger(__name__)
FINISH_TIMEOUT = 120.0
SNAPSHOT_FIELDS = ('name', 'created_at', 'expires_at', 'description', 'architecture', 'config',
                   'devices', 'profiles', 'ephemeral', 'expanded_config', 'expanded_devices',
                   'last_used_at', 'size')


def check_source(source):
    """BadRequest for a migration source the target cannot use (before anything is created)."""
    mode = source.get('mode', 'pull')
    if mode not in ('pull', 'push'):
        raise BadRequest('Unknown migration mode %r (pull or push)' % (mode,))
    if source.get('live'):
        LOG.debug('source.live is decided by the source; a live transfer would be refused there')
    if mode == 'pull':
        Channels.check_dial_args(source.get('operation'), _secrets(source),
                                 source.get('certificate'))


def _secrets(source):
    # LXD's JSON name is "secrets" (the Go field is Websockets)
    return source.get('secrets') or source.get('websockets')


def start(daemon, doc, body, root):
    """The operation receiving instance doc['name'] (its record is already reserved)."""
    source = body.get('source') or {}
    channels = Channels()
    requested = body.get('config') or {}
    start_after = requested.get('volatile.last_state.power') == 'RUNNING'

    async def work(op):
        name = doc['name']
        try:
            if source.get('mode', 'pull') == 'pull':
                await channels.dial(source['operation'], _secrets(source),
                                    source['certificate'])
            else:
                await channels.wait_connected()
            header = await _receive(daemon, op, channels, doc, root)
            starts = bool(header.get('running')) and start_after
            await channels.send('control', type='result', success=True, target_starts=starts)
        except BaseException as exc:
            message = exc.message if isinstance(exc, ApiError) else str(exc)
            LOG.warning('Receiving instance %s failed: %s', name, message)
            try:
                await channels.send('control', type='result', success=False, message=message)
            except Exception:
                pass
            await op.run_blocking(daemon.instances.remove_everything, name, doc)
            await channels.close()
            raise
        try:
            # the source says when its side is settled (its copy running again, for a copy of a
            # running container): the client sees this operation end only then
            await channels.receive_message('control', 'finished', FINISH_TIMEOUT)
        except TransferError as exc:
            LOG.warning('Instance %s received; the source did not confirm: %s', name,
                        exc.message)
        finally:
            await channels.close()
        daemon.events.lifecycle('instance-created', '/1.0/instances/%s' % name)
        if starts:
            async with daemon.instances.lock(name):
                await op.run_blocking(daemon.instances.start_container, name)
            daemon.events.lifecycle('instance-started', '/1.0/instances/%s' % name)
    resources = {'instances': ['/1.0/instances/%s' % doc['name']],
                 'containers': ['/1.0/containers/%s' % doc['name']]}
    op = daemon.operations.start(work, 'Creating instance', resources)
    if source.get('mode', 'pull') == 'push':
        channels.serve(op)
    return op


async def _receive(daemon, op, channels, doc, root):
    name = doc['name']
    header = await channels.receive_message('control', 'header', CONNECT_TIMEOUT)
    records = header.get('snapshots') or []
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise TransferError('Migration protocol error: bad snapshot list')
    snapshots = [check_snapshot_name(r.get('name')) for r in records]
    if len(set(snapshots)) != len(snapshots):
        raise TransferError('Migration protocol error: duplicate snapshot names')
    pool = daemon.storage.pool(root['pool'])
    offered = header.get('formats') or []
    usable = [f for f in volumes.formats(pool) if f in offered]
    if not usable:
        raise TransferError('No common volume format (source offers %s)' % offered)
    await channels.send('control', type='accept', format=usable[0])
    await volumes.receive_volumes(channels, pool, name, snapshots, usable[0], op.run_blocking)
    await op.run_blocking(_finish, daemon, doc, root, pool, records, header.get('idmap') or '')
    LOG.info('Instance %s received (%s, %d snapshots)', name, usable[0], len(snapshots))
    return header


def _finish(daemon, doc, root, pool, records, idmap_json):
    """Blocking: snapshot records, root disk size, the id map shift, then the record is live."""
    name = doc['name']
    for record in records:
        snapshot = {k: record[k] for k in SNAPSHOT_FIELDS if k in record}
        daemon.db.put('snapshot', '%s/%s' % (name, record['name']), snapshot)
    if root.get('size'):
        pool.set_instance_size(name, parse_size(root['size']))
    try:
        previous = idmaps.from_json(idmap_json)
    except Exception:
        raise TransferError('Migration protocol error: bad id map')
    daemon.instances.finish_volume(doc, pool, previous, 'copy')
