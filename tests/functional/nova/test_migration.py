"""Cold migration between two compute hosts, each with its own backend, through Nova's API.

The container moves between the backends over HTTPS (each backend trusts the client
certificate; each server certificate is pinned). Live migration is refused by the pre-check on
these backends (no CRIU) and the instance keeps running.
"""
from tests.functional.nova import base
from tests.functional.nova import hosts
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

    def flags_lxd(self):
        from nova_lxd.virt import conf
        return conf.CONF.lxd


base.for_each_backend(globals(), _ColdMigrationTest, 'TestColdMigration')
