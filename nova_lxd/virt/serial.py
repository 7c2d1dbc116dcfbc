"""Interactive serial consoles: Nova's serial proxy reaches a container's console over TCP.

nova-serialproxy connects to a TCP port on the compute host (libvirt gives each guest's serial
port one from [serial_console] port_range, on proxyclient_address). Here an instance gets such a
port the first time its console is asked for, until it is destroyed; each connection to the port
is bridged to the backend's console websocket (POST /1.0/instances/{name}/console, the
container's tty 0), the same stream `lxc console` attaches to.
"""
import socket
import threading

from oslo_log import log as logging
from pylxd.client import _WebsocketClient

from nova.console import serial as serial_ports
from nova.console import type as ctype
import nova.conf
from nova import exception

CONF = nova.conf.CONF
LOG = logging.getLogger(__name__)

CHUNK = 65536
WINDOW = {'width': 80, 'height': 25}    # a serial terminal's usual size; no way to learn it


class _ConsoleSocket(_WebsocketClient):
    """The console's data websocket: what the container writes goes to the TCP peer."""

    def __init__(self, url, peer, **kwargs):
        super().__init__(url, **kwargs)
        self._peer = peer

    def handshake_ok(self):
        pass

    def received_message(self, message):
        try:
            self._peer.sendall(message.data)
        except OSError:
            self.close()

    def closed(self, code, reason=None):
        try:
            self._peer.shutdown(socket.SHUT_RDWR)   # ends the pump of the other direction
        except OSError:
            pass


def _websocket(client, operation, secret, cls, *args):
    ws = cls(client.websocket_url, *args, ssl_options=client.ssl_options)
    ws.resource = '%s/websocket?secret=%s' % (operation, secret)
    ws.connect()
    return ws


def _attach(client, name, peer):
    """Blocking: one TCP connection to the console of container `name`, until either side ends.

    The control websocket is opened too, as `lxc console` does (LXD 5.0.2 exits when an
    instance whose console session had none is stopped).
    """
    ws = None
    try:
        reply = client.api.instances[name].console.post(json=dict(type='console', **WINDOW))
        operation, fds = reply.json()['operation'], reply.json()['metadata']['metadata']['fds']
        ws = _websocket(client, operation, fds['0'], _ConsoleSocket, peer)
        control = _websocket(client, operation, fds['control'], _WebsocketClient)
    except Exception as exc:
        LOG.warning('Serial console of %s not available: %s', name, exc)
        if ws is not None:
            ws.close()
        peer.close()
        return
    pump = threading.Thread(target=_pump, args=(peer, ws), daemon=True,
                            name='nova-lxd-serial-in')
    pump.start()
    try:
        ws.run()
    finally:
        ws.close()
        control.close()
        pump.join(5)
        peer.close()


def _pump(peer, ws):
    """TCP peer -> console, until the peer closes."""
    try:
        while True:
            data = peer.recv(CHUNK)
            if not data:
                break
            ws.send(data, binary=True)
    except Exception:
        pass
    finally:
        try:
            ws.close()
        except Exception:
            pass


class _Port:
    """One instance's listening port; each accepted connection gets a bridge of its own."""

    def __init__(self, connect, target, host, port):
        self.host, self.port = host, port
        self._connect = connect
        self._target = target       # (client) -> the container whose console it is now
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family)
        threading.Thread(target=self._accept, daemon=True, name='nova-lxd-serial').start()

    def _accept(self):
        while True:
            try:
                peer, _ = self._sock.accept()
            except OSError:        # closed: the instance is gone
                return
            threading.Thread(target=self._bridge, args=(peer,), daemon=True,
                             name='nova-lxd-serial-bridge').start()

    def _bridge(self, peer):
        client = self._connect()
        try:
            name = self._target(client)
        except Exception as exc:
            LOG.warning('No container for a serial console connection: %s', exc)
            peer.close()
            return
        _attach(client, name, peer)

    def close(self):
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


class SerialConsoles:
    """The serial console ports of this host's instances, by instance uuid."""

    def __init__(self, connect):
        self._connect = connect     # () -> pylxd Client
        self._ports = {}
        self._lock = threading.Lock()

    def console(self, uuid, target):
        """ConsoleSerial (host, port) of an instance, its port opened on first use.

        target(client) names the container each connection attaches to (the rescue container
        while the instance is rescued).
        """
        if not CONF.serial_console.enabled:
            raise exception.ConsoleTypeUnavailable(console_type='serial')
        with self._lock:
            port = self._ports.get(uuid)
            if port is None:
                host = CONF.serial_console.proxyclient_address
                number = serial_ports.acquire_port(host)
                try:
                    port = _Port(self._connect, target, host, number)
                except OSError:
                    serial_ports.release_port(host, number)
                    raise
                self._ports[uuid] = port
        return ctype.ConsoleSerial(host=port.host, port=port.port)

    def release(self, uuid):
        """The instance is gone: its port closed and given back to the range."""
        with self._lock:
            port = self._ports.pop(uuid, None)
        if port is not None:
            port.close()
            serial_ports.release_port(port.host, port.port)

    def release_all(self):
        for uuid in list(self._ports):
            self.release(uuid)
