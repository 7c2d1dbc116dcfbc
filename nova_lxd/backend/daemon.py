"""nova-lxd-backend: the bundled LXD-API daemon (config, sockets, start-up reconciliation, stop)."""
import argparse
import asyncio
import logging
import os
import signal
import socket
import sys

from aiohttp import web

from nova_lxd.backend import (api, certs, event_streams, events, listeners, memory, operations,
                              recycle, trust)
from nova_lxd.backend import config as daemon_config
from nova_lxd.backend.db import Database
from nova_lxd.backend.errors import BadRequest

LOG = logging.getLogger('nova_lxd.backend')


def _package_version():
    try:
        from importlib import metadata
        return metadata.version('nova-lxd')
    except Exception:
        return '0.0.0'


def _lxc_version():
    try:
        import lxc
        return lxc.version
    except Exception:
        return ''


class Daemon:
    """Owns the state of one backend: its data directory, database, operations and services."""

    def __init__(self, config):
        self.config = config
        self.version = _package_version()
        self.lxc_version = _lxc_version()
        self.events = events.EventHub()
        self.db = None
        self.operations = None
        self.certificate_fingerprint = ''
        self._runner = None
        self._listeners = {}         # 'unix' / 'https' -> (listening socket, its address)
        self._sites = {}             # the same names -> the aiohttp site serving it
        self._adopted = set()        # tasks serving event streams of the previous image
        self._https_address = ''
        self._stopped = None
        self._trimmer = None
        self._recycler = recycle.Recycler(self, config.recycle_growth_mb)

    # -- start-up ---------------------------------------------------------------------------
    def prepare(self):
        """Everything that must exist before the API opens: directories, certificate, database."""
        os.makedirs(self.config.data_dir, mode=0o711, exist_ok=True)
        os.chmod(self.config.data_dir, 0o711)
        cert, key = self.config.path('server.crt'), self.config.path('server.key')
        certs.ensure_server_certificate(cert, key)
        with open(cert) as f:
            self.certificate_fingerprint = certs.fingerprint(f.read())
        self.db = Database(self.config.path('nova-lxd.db'))
        for op_id, description in self.db.take_interrupted_operations():
            LOG.warning('Operation %s (%s) was interrupted by a daemon restart: failed',
                        op_id, description)
        self.operations = operations.OperationRegistry(
            on_change=self._operation_changed, store=self.db, on_forget=self.work_done)
        self.trust = trust.TrustStore(self.db, self.certificate_fingerprint, self.https_addresses)
        # storage, then images: pools mounted (the default one created on first start)
        from nova_lxd.backend.images import ImageStore
        from nova_lxd.backend.storage import StorageService
        self.storage = StorageService(self)
        self.storage.start()
        self.images = ImageStore(self)
        # networks before instances: containers join bridges that must exist
        from nova_lxd.backend.network.service import NetworkService
        self.networks = NetworkService(self)
        self.networks.start()
        # instances and profiles last: the default profile's root disk names the default pool
        from nova_lxd.backend.instances.profiles import ProfileService
        from nova_lxd.backend.instances.service import InstanceService
        self.instances = InstanceService(self)
        self.profiles = ProfileService(self)
        self.profiles.prepare()
        self.networks.attach_default_network()
        self.instances.prepare()
        from nova_lxd.backend.instances.snapshots import SnapshotService
        self.snapshots = SnapshotService(self)
        from nova_lxd.backend.migration import MigrationService
        self.migration = MigrationService(self)
        self.migration.prepare()

    def _operation_changed(self, op):
        self.events.send('operation', op.to_dict())
        self.work_done()

    async def _request_served(self, request, response):
        self.work_done()

    def work_done(self):
        """Work was done or let go of: give the heap back once things are quiet."""
        if self._trimmer is not None:
            self._trimmer.activity()

    async def start(self):
        loop = asyncio.get_running_loop()
        recycled = recycle.was_recycled()
        if recycled:
            recycle.reap_inherited(loop)    # before this image starts children of its own
        for sock, types in event_streams.inherited():   # before the start-up's own events
            self._adopt(event_streams.AdoptedStream(sock, types, self.events))
        memory.tune_malloc()        # before the worker threads: each would get its own arena
        memory.report_on_signal(loop, self.config.data_dir)
        # the heap of a burst goes back after it, and once more when its idle connections close;
        # then, if that was not enough, the whole process image (recycle.py)
        self._trimmer = memory.IdleTrimmer(
            loop, late=self.config.keepalive_timeout + memory.IDLE_DELAY,
            on_settled=self._recycler.check)
        self.prepare()
        self.instances.start_background(autostart=not recycled)
        self.snapshots.start_background()
        self._stopped = asyncio.Event()
        app = api.make_app(self)
        app.on_response_prepare.append(self._request_served)   # a listing is a burst too
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     keepalive_timeout=self.config.keepalive_timeout)
        await self._runner.setup()
        path = self.config.socket_path
        await self._serve('unix', listeners.unix(path, self.config.socket_group,
                                                 self.config.socket_mode), path)
        LOG.info('nova-lxd-backend %s serving on %s%s', self.version, path,
                 ' (re-executed, sockets inherited)' if recycled else '')
        try:
            await self._listen_https(self.db.config().get('core.https_address', ''))
        except OSError as exc:
            LOG.error('Cannot serve HTTPS on %s: %s', self._https_address, exc)
        listeners.close_unused()
        self._recycler.serving()
        self._recycler.check()        # a SIGHUP that came during the start

    async def _serve(self, name, sock, address, ssl_context=None):
        site = web.SockSite(self._runner, sock, ssl_context=ssl_context)
        try:
            await site.start()
        except BaseException:
            sock.close()
            raise
        self._listeners[name], self._sites[name] = (sock, address), site

    async def _unserve(self, name):
        """Stop serving `name`; its socket is closed (unless it was duplicated before)."""
        self._listeners.pop(name, None)
        site = self._sites.pop(name, None)
        if site is not None:
            await site.stop()

    # -- re-executing in place (recycle.py) --------------------------------------------------
    def _adopt(self, stream):
        task = asyncio.ensure_future(stream.run())
        self._adopted.add(task)
        task.add_done_callback(self._adopted.discard)

    def quiet(self):
        """Nothing is going on that a re-exec would cut, but event listeners (handed over)."""
        server = self._runner.server if self._runner else None
        return (server is not None and not self.operations.all()
                and not self.instances.noticing()
                and len(server.connections) + len(self._adopted)
                <= self.events.listener_count())

    async def pause_listeners(self):
        """Stop accepting; the sockets listen on (a connect waits in the backlog): returned."""
        kept = {name: (sock.dup(), address) for name, (sock, address) in self._listeners.items()}
        for name in list(self._sites):
            await self._unserve(name)
        return kept

    async def resume_listeners(self, kept):
        for name, (sock, address) in kept.items():
            await self._serve(name, sock, address,
                              self._https_context() if name == 'https' else None)

    async def hand_over_event_listeners(self, timeout):
        """Each event listener's stream kept for the next image, or closed: [(fd, types)]."""
        self.events.restarting()
        deadline = asyncio.get_running_loop().time() + timeout
        while ((self._runner.server.connections or self._adopted)
               and asyncio.get_running_loop().time() < deadline):
            await asyncio.sleep(0.01)
        return self.events.kept

    async def stop(self, keep_socket=False):
        LOG.info('Stopping; containers keep running')
        if getattr(self, 'instances', None):
            self.instances.stop_background()   # lxcfs keeps running for the containers
        if getattr(self, 'snapshots', None):
            self.snapshots.stop_background()
        if getattr(self, 'storage', None):
            await asyncio.get_running_loop().run_in_executor(None, self.storage.settle)
        if self._trimmer is not None:
            self._trimmer.cancel()
        if self.operations:
            await self.operations.shutdown()
        if self._runner:
            await self._runner.cleanup()
        if self.db:
            self.db.close()
        if keep_socket:
            return
        try:
            os.unlink(self.config.socket_path)
        except FileNotFoundError:
            pass

    async def run(self):
        # SIGHUP's default action would end a daemon still starting; a request waits for it
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._recycler.request)
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopped.set)
        await self._stopped.wait()
        await self.stop()

    # -- facts the API reports --------------------------------------------------------------
    def is_trusted(self, request):
        # The unix socket's file mode (0660, root and the socket group) is its access control,
        # as for LXD; over HTTPS only a client certificate in the trust store is trusted.
        if request.transport is None:
            return False
        if request.transport.get_extra_info('socket').family == socket.AF_UNIX:
            return True
        return self.trust.is_trusted_der(trust.peer_certificate_der(request))

    def https_addresses(self):
        address = self.db.config().get('core.https_address')
        return [address] if address else []

    def default_storage_driver(self):
        return self.storage.default_driver_name()

    def storage_drivers_info(self):
        return self.storage.drivers_info()

    async def apply_server_config(self, values):
        address = values.get('core.https_address', '')
        if address != self._https_address:
            old = self._https_address
            try:
                await self._listen_https(address)
            except OSError as exc:
                await self._listen_https(old)
                raise BadRequest('Cannot listen on %s: %s' % (address, exc))
        self.db.set_config(values)

    async def _listen_https(self, address):
        """Serve the API over TLS on core.https_address ('' stops it); moves on change."""
        await self._unserve('https')
        self._https_address = ''
        if not address:
            return
        await self._serve('https', listeners.tcp(address), address, self._https_context())
        self._https_address = address
        LOG.info('Serving HTTPS on %s', address)

    def _https_context(self):
        return trust.server_ssl_context(self.config.path('server.crt'),
                                        self.config.path('server.key'),
                                        [doc['certificate'] for doc in self.trust.list()])


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='nova-lxd-backend', description=__doc__)
    parser.add_argument('--config-file', default=daemon_config.DEFAULT_CONFIG_FILE,
                        help='daemon config file (default: %(default)s, optional)')
    parser.add_argument('--data-dir', help='everything the daemon owns lives here '
                        '(default: %s); its socket is DIR/unix.socket' %
                        daemon_config.DEFAULT_DATA_DIR)
    parser.add_argument('--group', dest='socket_group', help='group owning the unix socket')
    parser.add_argument('--log-file', help='log here instead of stderr')
    parser.add_argument('--debug', action='store_true', default=None)
    return parser.parse_args(argv)


def setup_logging(config):
    handler = (logging.FileHandler(config.log_file) if config.log_file
               else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter(
        '%(asctime)s %(process)d %(levelname)s %(name)s %(message)s'))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if config.debug else logging.INFO)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = daemon_config.DaemonConfig.load(
            args.config_file, data_dir=args.data_dir, socket_group=args.socket_group,
            log_file=args.log_file, debug=args.debug)
    except ValueError as exc:      # a value of the config file, named in the message
        sys.stderr.write('nova-lxd-backend: %s: %s\n' % (args.config_file, exc))
        return 1
    setup_logging(config)
    if os.geteuid() != 0:
        LOG.error('nova-lxd-backend must run as root (it manages containers)')
        return 1
    asyncio.run(Daemon(config).run())
    return 0


if __name__ == '__main__':
    sys.exit(main())
