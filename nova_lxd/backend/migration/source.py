"""The source side: POST /1.0/instances/{name} {"migration": true, ...}.

Pull mode (default): the operation is a websocket operation whose metadata holds the "control"
and "fs" secrets; the target connects to it. Push mode ("target" given): the source dials the
target's operation with the target's secrets, pinning target.certificate.

A stateless transfer of a running container stops it once the peer is connected (so the copy is
one consistent point in time: stop-move-start), sends it, and starts it again unless the target
said it starts its own copy (see sink.py); on any failure a container that was running is started
again. Live (stateful) migration needs CRIU and is refused where `criu check` fails.
"""
import asyncio
import logging

from nova_lxd.backend.errors import ApiError, BadRequest
from nova_lxd.backend.migration import criu, volumes
from nova_lxd.backend.migration.channels import Channels, TransferError

LOG = logging.getLogger(__name__)
ANSWER_TIMEOUT = 60.0


def parse_request(body):
    live = body.get('live', False)
    instance_only = body.get('instance_only', body.get('container_only', False))
    if not isinstance(live, bool) or not isinstance(instance_only, bool):
        raise BadRequest('live and instance_only must be booleans')
    target = body.get('target')
    if target is not None and not isinstance(target, dict):
        raise BadRequest('target must be an object (operation, websockets, certificate)')
    if body.get('pool'):
        raise BadRequest('Moving an instance to another storage pool of this server is not '
                         'supported; the target chooses the pool of a migrated instance')
    return live, instance_only, target


def _secrets(target):
    # LXD's JSON name is "secrets" (the Go field is Websockets)
    return target.get('secrets') or target.get('websockets')


def snapshot_records(daemon, name):
    """The instance's snapshot records, oldest first."""
    records = [daemon.db.get('snapshot', '%s/%s' % (name, snap))
               for snap in daemon.snapshots.names(name)]
    return sorted([r for r in records if r], key=lambda r: r.get('created_at') or '')


async def start(daemon, name, body, snapshot=None):
    """The operation sending instance `name`, or only its `snapshot` (as a new instance)."""
    live, instance_only, target = parse_request(body)
    instances = daemon.instances
    await daemon.operations.run_blocking(instances.get, name)   # 404 for an unknown instance
    if snapshot is not None:
        daemon.snapshots.get(name, snapshot)                      # 404 for an unknown one
    running = snapshot is None and await daemon.operations.run_blocking(
        instances.is_running, name)
    if live and running:
        reason = await daemon.operations.run_blocking(criu.unavailable_reason)
        raise BadRequest('Live migration of a running container needs CRIU: %s. Stop the '
                         'instance first, or migrate it stateless (live: false; '
                         '`lxc move --stateless`), which stops it, moves it and lets the '
                         'target start it.' % (reason or 'live migration is not implemented '
                                               'by this backend'))
    if target is not None:
        Channels.check_dial_args(target.get('operation'), _secrets(target),
                                 target.get('certificate'))
    channels = Channels()

    async def work(op):
        try:
            if target is None:
                await channels.wait_connected()
            else:
                await channels.dial(target['operation'], _secrets(target),
                                    target['certificate'])
            await _send(daemon, op, channels, name, instance_only, snapshot)
        finally:
            await channels.close()
    resources = {'instances': ['/1.0/instances/%s' % name],
                 'containers': ['/1.0/containers/%s' % name]}
    op = daemon.operations.start(work, 'Migrating instance', resources)
    if target is None:
        channels.serve(op)
    return op


async def _send(daemon, op, channels, name, instance_only, from_snapshot):
    instances = daemon.instances
    url = '/1.0/instances/%s' % name
    async with instances.lock(name):
        doc = await op.run_blocking(instances.get, name)
        was_running = not from_snapshot and await op.run_blocking(instances.is_running, name)
        if from_snapshot:
            # the files are owned as they were when the snapshot was taken
            doc = daemon.snapshots.get(name, from_snapshot)
        if was_running:
            # a clean shutdown within the instance's boot.host_shutdown_timeout, then forced
            clean = await op.run_blocking(instances.stop_container, name, False, -1)
            daemon.events.lifecycle('instance-shutdown' if clean else 'instance-stopped', url)
        try:
            pool = instances.pool_of(name)
            records = [] if instance_only or from_snapshot else snapshot_records(daemon, name)
            snapshots = [r['name'] for r in records]
            paths = [pool.snapshot_path(name, s) for s in snapshots] + \
                [pool.snapshot_path(name, from_snapshot) if from_snapshot
                 else pool.instance_path(name)]
            offer = volumes.formats(pool)
            if not all(volumes.is_btrfs_volume(pool, p) for p in paths):
                offer = ['tar']
            await channels.send('control', type='header', formats=offer, snapshots=records,
                                idmap=doc['config'].get('volatile.last_state.idmap', ''),
                                running=was_running, architecture=doc.get('architecture'))
            reply = await channels.receive_message('control', 'accept', ANSWER_TIMEOUT)
            if reply.get('format') not in offer:
                raise TransferError('The target chose an unknown volume format %r'
                                    % reply.get('format'))
            # the control channel is read while the volumes go out: a target that fails or
            # vanishes mid-transfer stops the sending at once
            answer = asyncio.ensure_future(channels.receive_message('control', 'result'))
            sending = asyncio.ensure_future(volumes.send_volumes(
                channels, pool, name, snapshots, reply['format'], op.run_blocking,
                from_snapshot))
            try:
                await asyncio.wait({answer, sending}, return_when=asyncio.FIRST_COMPLETED)
                if not sending.done():
                    answer.result()     # raises why the target stopped
                    raise TransferError('The target answered before the transfer ended')
                sent = sending.result()
                result = await answer
            finally:
                for task in (answer, sending):
                    task.cancel()
                await asyncio.gather(answer, sending, return_exceptions=True)
            if not result.get('success'):
                raise TransferError('The target failed: %s' % result.get('message', ''))
            LOG.info('Instance %s sent (%s, %d bytes, %d snapshots)', name, reply['format'],
                     sent, len(snapshots))
        except BaseException as exc:
            await channels.abort(exc.message if isinstance(exc, ApiError) else
                                 'the source failed: %s' % (exc or exc.__class__.__name__))
            if was_running:
                LOG.warning('Migration of %s failed: starting it again', name)
                await _restart(daemon, op, name)
            raise
        if was_running and not result.get('target_starts'):
            await _restart(daemon, op, name)   # a copy: the source keeps running
        try:
            await channels.send('control', type='finished')
        except TransferError:
            pass   # the target has its copy; it only waited for us to settle


async def _restart(daemon, op, name):
    try:
        await op.run_blocking(daemon.instances.start_container, name)
        daemon.events.lifecycle('instance-started', '/1.0/instances/%s' % name)
    except Exception:
        LOG.exception('Starting %s again after its migration', name)
