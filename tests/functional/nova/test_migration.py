"""Cold migration between two compute hosts, each with its own backend, through Nova's API.

The container moves between the backends over HTTPS (each backend trusts the client
certificate; each server certificate is pinned). Live migration is refused by the pre-check on
these backends (no CRIU) and the instance keeps running. With the stateless opt-in it moves,
attached volumes too: connected at the destination before the move (each host sees the volume
at its own loop device, see loop_volumes), disconnected at the source after it, and only the
destination's connection removed when the move fails.
"""
from tests.functional.nova import base
from tests.functional.nova import hosts
from tests.functional.nova import loop_volumes
from tests.functional.nova import moves_base
from nova_lxd.virt import migration as lxd_migration


class _ColdMigrationTest(moves_base.MovesTestBase):
    __test__ = False

    def _migrated(self):
        server = self._boot('host1')
        self._write_marker(self._container('host1', server), 'travelled')
        server = self._migrate_server(server, host='host2')
        self.assertEqual('host2', server['OS-EXT-SRV-ATTR:host'])
        container = self._container('host2', server)
        self.assertEqual('Running', container.status)
        self.assertEqual('travelled', self._marker(container))
        name = server['OS-EXT-SRV-ATTR:instance_name']
        self.assertEqual([name + '-resize'], self._nova_containers('host1'))
        self.assertEqual('Stopped', self.clients['host1'].instances.get(name + '-resize').status)
        return server

    def test_migrate_confirm(self):
        server = self._migrated()
        self._confirm_resize(server)
        self.assertEqual([], self._nova_containers('host1'))
        self.assertEqual([server['OS-EXT-SRV-ATTR:instance_name']],
                         self._nova_containers('host2'))
        self._delete_server(server)

    def test_migrate_revert(self):
        server = self._migrated()
        self._run(self._container('host2', server), 'sh', '-c', 'echo changed > /root/marker')
        self.api.post_server_action(server['id'], {'revertResize': None})
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        container = self._container('host1', server)
        self.assertEqual('Running', container.status)
        self.assertEqual('travelled', self._marker(container))
        self.assertEqual([], self._nova_containers('host2'))
        self._delete_server(server)

    def _assert_back_on_host1(self, server, pid=None):
        self._wait_for_migration_status(server, ['error'])
        server = self._wait_for_server_parameter(
            server, {'status': 'ACTIVE', 'OS-EXT-STS:task_state': None})
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        container = self._container('host1', server)
        self.assertEqual('Running', container.status)
        if pid is not None:
            self.assertEqual(pid, container.state().pid)
        self.assertEqual('kept', self._marker(container))
        self.assertEqual([server['OS-EXT-SRV-ATTR:instance_name']],
                         self._nova_containers('host1'))
        self.assertEqual([], self._nova_containers('host2'))
        return server

    def test_destination_unreachable_changes_nothing(self):
        server = self._boot('host1')
        container = self._container('host1', server)
        self._write_marker(container, 'kept')
        pid = container.state().pid
        endpoints = dict(self.flags_lxd().migration_endpoints,
                         host2='https://127.0.0.1:%d' % hosts._free_port())
        self.flags(migration_endpoints=endpoints, group='lxd')
        self.api.post_server_action(server['id'], {'migrate': {'host': 'host2'}})
        server = self._assert_back_on_host1(server, pid=pid)
        self._delete_server(server)

    def test_destination_gone_mid_migration(self):
        """The destination's HTTPS API goes away once the source is stopped and renamed."""
        server = self._boot('host1')
        self._write_marker(self._container('host1', server), 'kept')
        dest = self.clients['host2']
        address = dest.api.get().json()['metadata']['config']['core.https_address']
        real_transfer = lxd_migration.transfer

        def transfer_to_vanished(src_client, src_name, dest_client, *args):
            dest.api.patch(json={'config': {'core.https_address': ''}})
            dest_client.api.session.close()   # no kept-alive connection survives either
            return real_transfer(src_client, src_name, dest_client, *args)
        self.stub_out('nova_lxd.virt.migration.transfer', transfer_to_vanished)
        self.addCleanup(dest.api.patch, json={'config': {'core.https_address': address}})
        self.api.post_server_action(server['id'], {'migrate': {'host': 'host2'}})
        server = self._assert_back_on_host1(server)
        self._delete_server(server)

    def test_live_migration_refused_instance_keeps_running(self):
        server = self._boot('host1')
        container = self._container('host1', server)
        pid = container.state().pid
        server = self._live_migrate(server, migration_expected_state='error',
                                    server_expected_state='ACTIVE')
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        container = self._container('host1', server)
        self.assertEqual('Running', container.status)
        self.assertEqual(pid, container.state().pid)
        self.assertEqual([], self._nova_containers('host2'))
        log = self.stdlog.logger.output
        self.assertIn('needs checkpoint/restore (CRIU) on both backends', log)
        self.assertIn('allow_stateless_live_migration', log)
        self._delete_server(server)

    def test_stateless_live_migration_opt_in(self):
        """[lxd] allow_stateless_live_migration: stop, transfer, start; processes restart."""
        self.flags(allow_stateless_live_migration=True, group='lxd')
        server = self._boot('host1')
        container = self._container('host1', server)
        self._write_marker(container, 'live-moved')
        server = self._live_migrate(server, migration_expected_state='completed',
                                    server_expected_state='ACTIVE', host='host2')
        server = self._wait_for_server_parameter(server, {'OS-EXT-SRV-ATTR:host': 'host2'})
        container = self._container('host2', server)
        self.assertEqual('Running', container.status)
        self.assertEqual('live-moved', self._marker(container))
        self.assertEqual([], self._nova_containers('host1'))
        self._delete_server(server)

    def _volume_sources(self, container, path):
        return [d['source'] for d in container.devices.values() if d.get('path') == path]

    def _server_with_volume(self, data):
        """A server on host1 with an attached volume (two views: host1's, host2's)."""
        self.flags(allow_stateless_live_migration=True, group='lxd')
        volumes = loop_volumes.LoopVolumes(self)
        volume = volumes.create(data, views=2)
        server = self._boot('host1')
        self._attach_volume(server, volume)
        path = self.api.get_server_volume(server['id'], volume)['device']
        container = self._container('host1', server)
        self.assertEqual([volumes.views[volume][0]], self._volume_sources(container, path))
        return server, volumes, volumes.views[volume], path

    def test_stateless_live_migration_moves_attached_volumes(self):
        server, volumes, (source_dev, dest_dev), path = self._server_with_volume(b'')
        container = self._container('host1', server)
        self._run(container, 'sh', '-c', 'echo written-on-host1 | dd of=%s conv=fsync' % path)
        server = self._live_migrate(server, migration_expected_state='completed',
                                    server_expected_state='ACTIVE', host='host2')
        server = self._wait_for_server_parameter(server, {'OS-EXT-SRV-ATTR:host': 'host2'})
        container = self._container('host2', server)
        self.assertEqual('Running', container.status)
        # on the destination's own device, connected there before the move
        self.assertEqual([dest_dev], self._volume_sources(container, path))
        self.assertEqual('written-on-host1', self._run(container, 'head', '-c', '16', path))
        self.assertEqual(source_dev, volumes.connected[0])
        self.assertEqual({dest_dev}, set(volumes.connected[1:]))
        # the source's connection removed after the move, the destination's kept
        self.assertEqual([source_dev], volumes.disconnected)
        self.assertEqual([], self._nova_containers('host1'))
        self._delete_server(server)
        self.assertEqual([source_dev, dest_dev], volumes.disconnected)

    def test_failed_live_migration_removes_the_destinations_volume_connections(self):
        server, volumes, (source_dev, dest_dev), path = self._server_with_volume(b'kept-volume')
        self._write_marker(self._container('host1', server), 'kept')

        def broken_transfer(*args):
            raise RuntimeError('the transfer broke')
        self.stub_out('nova_lxd.virt.migration.transfer', broken_transfer)
        self.api.post_server_action(server['id'], {'os-migrateLive': {
            'host': 'host2', 'block_migration': 'auto'}})
        self._wait_for_migration_status(server, ['failed', 'error'])
        server = self._wait_for_server_parameter(
            server, {'status': 'ACTIVE', 'OS-EXT-STS:task_state': None})
        self.assertEqual('host1', server['OS-EXT-SRV-ATTR:host'])
        # the destination connected the volume for the move, then let go of it
        self.assertIn(dest_dev, volumes.connected)
        self.assertEqual([dest_dev], volumes.disconnected)
        self.assertEqual([], self._nova_containers('host2'))
        # the instance runs on with its volume, as it was
        container = self._container('host1', server)
        self.assertEqual('Running', container.status)
        self.assertEqual('kept', self._marker(container))
        self.assertEqual([source_dev], self._volume_sources(container, path))
        self.assertEqual('kept-volume', self._run(container, 'head', '-c', '11', path))
        self._delete_server(server)
        self.assertEqual([dest_dev, source_dev], volumes.disconnected)

    def flags_lxd(self):
        from nova_lxd.virt import conf
        return conf.CONF.lxd


base.for_each_backend(globals(), _ColdMigrationTest, 'TestColdMigration')
