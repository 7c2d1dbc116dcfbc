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
import logging
import os
import shutil
import stat
import time
import uuid

from nova_lxd.backend.migration import pipes
from nova_lxd.backend.migration.channels import TransferError
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
    """Kill and reap a stream process (its stdin/stdout pipe ends are closed by then).

    asyncio's wait() returns only once the stderr pipe has seen its end: communicate() reads it.
    """
    if proc.returncode is None:
        proc.kill()
    await proc.communicate()


async def _finish(proc, verb, label):
    """Reap a stream process; raise with its stderr if it failed."""
    _, stderr = await proc.communicate()
    if proc.returncode != 0:
        raise TransferError('%s %s failed: %s' % (verb, label, stderr.decode(
            errors='replace').strip()[-300:]))


# -- sending ---------------------------------------------------------------------------------------

async def _pump_process(cmd, channels, label):
    """Run cmd and send its stdout as binary frames; raise if it fails."""
    began = time.monotonic()
    proc, reader = await pipes.with_stdout(cmd)
    try:
        sent = await reader.pump(lambda chunk: channels.send_bytes('fs', chunk))
        reader.close()
        await _finish(proc, 'Sending', label)
        LOG.debug('Sent %s: %d bytes in %.3fs', label, sent, time.monotonic() - began)
    except BaseException:
        reader.close()      # a process still writing gets EPIPE
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
    proc, writer = await pipes.with_stdin(cmd)
    received = 0
    try:
        while True:
            message = await channels.receive('fs')
            if isinstance(message, dict):
                if message.get('type') != 'volume-end':
                    raise TransferError('Migration protocol error in the %s stream' % label)
                break
            received += len(message)
            try:
                await writer.write(message)
            except BrokenPipeError:
                # the process stopped reading: its stderr says why
                writer.close()
                await _finish(proc, 'Receiving', label)
                raise TransferError('Receiving %s failed: the stream went on after its end'
                                    % label)
        writer.close()
        await _finish(proc, 'Receiving', label)
        LOG.debug('Received %s: %d bytes in %.3fs', label, received, time.monotonic() - began)
    except BaseException:
        writer.close()
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
                # chrooted into the staging directory: no path of the stream can reach out of
                # it (the parents of incremental streams are received there too)
                await _feed_process(['btrfs', 'receive', '-q', '--chroot', staging], channels,
                                    label)
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
    """Put the subvolume `btrfs receive` just made in its place in the pool."""
    received = [e for e in os.listdir(staging) if e not in placed]
    source = os.path.join(staging, received[0]) if len(received) == 1 else None
    if source is None or not (stat.S_ISDIR(os.lstat(source).st_mode) and
                              os.lstat(source).st_ino == 256):
        raise TransferError('btrfs receive produced %d volumes, expected one' % len(received))
    if snapshot:
        # kept (read-only, with the received UUID by which `btrfs receive` finds it) until the
        # whole receive ends: it is the parent of the next incremental stream. A read-only
        # subvolume cannot move to another directory: the pool's snapshot is a snapshot of it.
        dest = pool.snapshot_path(name, snapshot)
        os.makedirs(os.path.dirname(dest), mode=0o711, exist_ok=True)
        system.run(['btrfs', '-q', 'subvolume', 'snapshot', '-r', source, dest],
                   'btrfs snapshot')
        placed.add(received[0])
        return
    # The instance volume is renamed into place, not snapshotted: a snapshot waited for the whole
    # received volume to be written out first (0.5 s of a 200 MB move's 1.4 s). Made writable
    # first, which clears its received UUID (its content will change).
    dest = pool.instance_path(name)
    if os.path.lexists(dest):
        raise TransferError('%s exists already' % dest)
    system.run(['btrfs', 'property', 'set', '-f', '-ts', source, 'ro', 'false'],
               'btrfs property set')
    os.chmod(source, 0o711)
    os.rename(source, dest)
