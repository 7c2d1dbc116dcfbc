"""Migration of a stopped 200 MB container between two daemons of the same kind.

The source daemon listens on a loopback HTTPS port and trusts a client certificate; pylxd's
Instance.migrate() then has the target pull the container (LXD's pull mode) and deletes the source:
a move. A daemon without HTTPS or migration fails set-up, and the table says 'unsupported' with
its error.
"""
from benchmarks import host, images
from benchmarks.scenarios import Scenario, register, stopwatch


@register
class MigrateStopped(Scenario):
    name = 'migrate stopped 200 MB'
    description = 'move a stopped 200 MB container to a second daemon (pylxd migrate, pull mode)'
    reps = (1, 2)   # a second daemon on each side and 200 MB moved: the full run must fit 30 min

    def setup(self, target):
        peer = target.spawn_peer()
        return {'peer': peer, 'https': target.enable_https()}

    def measure(self, target, state):
        peer, https = state['peer'], state['https']
        name = target.create(images.big()).name
        try:
            source = https.instances.get(name)
            with stopwatch() as t:
                source.migrate(peer.client, wait=True)
            moved = peer.client.instances.get(name)
            marker = moved.files.get('/' + images.MARKER_PATH)
            target.check(marker == images.MARKER, '%s: the moved container holds %r'
                         % (target.name, marker[:80]))
            # pylxd's migrate() deletes the source without waiting for that operation
            gone = host.wait_for(lambda: not target.client.instances.exists(name), 60, 0.1)
            target.check(gone, '%s: the source still has %s after the move'
                         % (target.name, name))
        finally:
            for side in (target, peer):
                if side.client.instances.exists(name):
                    side.remove(side.client.instances.get(name))
        return {self.name: t.seconds}

    def teardown(self, target, state):
        peer = state.get('peer')
        if peer is not None:
            target.peers.remove(peer)
            peer.close()
