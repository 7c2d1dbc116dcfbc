"""Moving instance volumes over the "fs" websocket: btrfs send/receive, or a tar stream.

When both pools are btrfs the source sends each snapshot with `btrfs send -p <previous>` (only
the blocks that changed since the previous one) and the instance against its last snapshot;
otherwise every volume goes as a tar stream (numeric owners, xattrs, ACLs). Snapshots travel
oldest first, the instance last.

Framing on the fs websocket: a JSON text frame {"type": "volume", "kind": "snapshot"|"instance",
"name": ...}, binary frames of the stream, then {"type": "volume-end"}; {"type": "done"} after the
last volume.

Received data lands only in the new instance's own volume paths (or a `.migrate-*` staging
directory in the pool, removed on failure and at daemon start), so a failed or interrupted
receive is cleaned up by deleting the instance volume.
"""
import asyncio
import logging
import os
import shutil
import time
import uuid

from nova_lxd.backend.migration.channels import CHUNK, TransferError
from nova_lxd.backend.storage import system

LOG = logging.getLogger(__name__)
TAR = ['tar', '--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls']
STAGING_PREFIX = '.migrate-'


def is_btrfs_volume(pool, path):
    return getattr(pool, 'name', None) == 'btrfs' and os.path.isdir(path) and \
        os.stat(path).st_ino == 256


def formats(pool):
    """The volume formats this pool can receive, best first."""
    return ['btrfs', 'tar'] if getattr(pool, 'name', None) == 'btrfs' else ['tar']


async def _kill(proc):
    """Kill and reap a stream process, draining its pipes.

    asyncio's wait() returns only once every pipe has seen its end, and a stdout pipe paused on
    a full buffer (nobody reads it after a failure) never would: a source whose target died
    mid-transfer hung there forever.
    """
    if proc.returncode is None:
        proc.kill()
    await proc.communicate()


# -- sending ---------------------------------------------------------------------------------------

async def _pump_process(cmd, channels, label):
    """Run cmd and send its stdout as binary frames; raise if it fails."""
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    sent = 0
    try:
        while True:
            chunk = await proc.stdout.read(CHUNK)
            if not chunk:
                break
            await channels.send_bytes('fs', chunk)
            sent += len(chunk)
        stderr = await proc.stderr.read()
        if await proc.wait() != 0:
            raise TransferError('Sending %s failed: %s' % (label, stderr.decode(
                errors='replace').strip()[-300:]))
        LOG.debug('Sent %s: %d bytes in %.3fs', label, sent, time.monotonic() - began)
    except BaseException:
        await _kill(proc)
        raise
    return sent


async def send_volumes(channels, pool, name, snapshots, volume_format, run_blocking,
                       from_snapshot=None):
    """Send the snapshots (oldest first) then the instance volume (or, for a copy of one
    snapshot, that snapshot's volume as the new instance)."""
    previous = None
    total = 0
    for snapshot in snapshots:
        path = pool.snapshot_path(name, snapshot)
        await channels.send('fs', type='volume', kind='snapshot', name=snapshot)
        if volume_format == 'btrfs':
            cmd = ['btrfs', 'send', '-q'] + (['-p', previous] if previous else []) + [path]
        else:
            cmd = TAR + ['-C', path, '-cf', '-', '.']
        total += await _pump_process(cmd, channels, 'snapshot %s' % snapshot)
        await channels.send('fs', type='volume-end')
        previous = path
    await channels.send('fs', type='volume', kind='instance', name=name)
    if from_snapshot:
        # already a read-only volume of one point in time
        path = pool.snapshot_path(name, from_snapshot)
        cmd = ['btrfs', 'send', '-q', path] if volume_format == 'btrfs' else \
            TAR + ['-C', path, '-cf', '-', '.']
        total += await _pump_process(cmd, channels, 'snapshot %s' % from_snapshot)
    elif volume_format == 'btrfs':
        path = pool.instance_path(name)
        # btrfs sends read-only subvolumes only: a read-only snapshot of the (stopped) instance
        holder = os.path.join(pool.pool_dir, 'containers', STAGING_PREFIX + uuid.uuid4().hex)
        await run_blocking(os.mkdir, holder, 0o700)
        frozen = os.path.join(holder, 'instance')
        try:
            await run_blocking(system.run, ['btrfs', '-q', 'subvolume', 'snapshot', '-r', path,
                                            frozen], 'btrfs snapshot')
            cmd = ['btrfs', 'send', '-q'] + (['-p', previous] if previous else []) + [frozen]
            total += await _pump_process(cmd, channels, 'instance %s' % name)
        finally:
            await run_blocking(remove_staging, holder)
    else:
        total += await _pump_process(TAR + ['-C', pool.instance_path(name), '-cf', '-', '.'],
                                     channels, 'instance %s' % name)
    await channels.send('fs', type='volume-end')
    await channels.send('fs', type='done')
    return total


# -- receiving -------------------------------------------------------------------------------------

async def _feed_process(cmd, channels, label):
    """Run cmd with the binary frames up to volume-end on its stdin."""
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    received = 0
    try:
        while True:
            message = await channels.receive('fs')
            if isinstance(message, dict):
                if message.get('type') != 'volume-end':
                    raise TransferError('Migration protocol error in the %s stream' % label)
                break
            received += len(message)
            proc.stdin.write(message)
            await proc.stdin.drain()
        proc.stdin.close()
        stderr = await proc.stderr.read()
        if await proc.wait() != 0:
            raise TransferError('Receiving %s failed: %s' % (label, stderr.decode(
                errors='replace').strip()[-300:]))
        LOG.debug('Received %s: %d bytes in %.3fs', label, received, time.monotonic() - began)
    except BaseException:
        await _kill(proc)
        raise
    return received


def _empty(path):
    for entry in os.listdir(path):
        full = os.path.join(path, entry)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.unlink(full)


def remove_staging(path):
    """Remove a staging directory and any (read-only) subvolumes received into it."""
    if not os.path.isdir(path):
        return
    for entry in os.listdir(path):
        full = os.path.join(path, entry)
        if os.path.isdir(full) and os.stat(full).st_ino == 256:
            # root deletes a read-only (received) subvolume as it is
            system.run(['btrfs', '-q', 'subvolume', 'delete', full], 'btrfs subvolume delete')
    shutil.rmtree(path, ignore_errors=True)


def remove_leftovers(pool):
    """Staging directories a crash left in a pool."""
    containers = os.path.join(pool.pool_dir, 'containers')
    try:
        entries = os.listdir(containers)
    except OSError:
        return
    for entry in entries:
        if entry.startswith(STAGING_PREFIX):
            LOG.info('Removing leftover migration staging %s', entry)
            try:
                remove_staging(os.path.join(containers, entry))
            except Exception:
                LOG.exception('Removing %s', entry)


async def receive_volumes(channels, pool, name, snapshots, volume_format, run_blocking):
    """Receive what send_volumes sends into instance `name` (whose volume must not exist)."""
    expected = [('snapshot', s) for s in snapshots] + [('instance', None)]
    staging, placed = None, set()
    if volume_format == 'btrfs':
        staging = os.path.join(pool.pool_dir, 'containers', STAGING_PREFIX + uuid.uuid4().hex)
        await run_blocking(os.mkdir, staging, 0o700)
    else:
        await run_blocking(pool.create_empty_instance, name, None)
    try:
        for kind, snapshot in expected:
            header = await channels.receive_message('fs', 'volume')
            if header.get('kind') != kind or (snapshot and header.get('name') != snapshot):
                raise TransferError('Migration protocol error: unexpected volume %r'
                                    % header.get('name'))
            label = 'snapshot %s' % snapshot if snapshot else 'instance %s' % name
            if volume_format == 'btrfs':
                await _feed_process(['btrfs', 'receive', '-q', staging], channels, label)
                await run_blocking(_place_received, pool, staging, placed, name, snapshot)
            else:
                path = pool.instance_path(name)
                await run_blocking(_empty, path)
                await _feed_process(TAR + ['-C', path, '-xpf', '-'], channels, label)
                if snapshot:
                    await run_blocking(pool.create_snapshot, name, snapshot)
        await channels.receive_message('fs', 'done')
    finally:
        if staging:
            await run_blocking(remove_staging, staging)


def _place_received(pool, staging, placed, name, snapshot):
    """Move the subvolume `btrfs receive` just made to its place in the pool."""
    received = [e for e in os.listdir(staging)
                if os.path.isdir(os.path.join(staging, e)) and e not in placed]
    if len(received) != 1:
        raise TransferError('btrfs receive produced %d volumes, expected one' % len(received))
    source = os.path.join(staging, received[0])
    if snapshot:
        # kept (as a read-only reference) until the whole receive ends: it is the parent of the
        # next incremental stream; the pool's snapshot is a read-only snapshot of it
        dest = pool.snapshot_path(name, snapshot)
        os.makedirs(os.path.dirname(dest), mode=0o711, exist_ok=True)
        system.run(['btrfs', '-q', 'subvolume', 'snapshot', '-r', source, dest],
                   'btrfs snapshot')
    else:
        system.run(['btrfs', '-q', 'subvolume', 'snapshot', source, pool.instance_path(name)],
                   'btrfs snapshot')
        os.chmod(pool.instance_path(name), 0o711)
    placed.add(received[0])
