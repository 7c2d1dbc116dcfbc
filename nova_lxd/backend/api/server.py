"""GET /, GET/PUT/PATCH /1.0: the server and its config."""
import os
import platform
import socket

from aiohttp import web

from nova_lxd.backend import config as server_config
from nova_lxd.backend.api import response

routes = web.RouteTableDef()

# Only what is really implemented: clients (pylxd, `lxc`) switch behaviour on these names.
API_EXTENSIONS = [
    'etag',
    'patch',
    'image_aliases_rename',
    'image_compression_algorithm',
    'image_create_aliases',
    'storage',
    'storage_api_volume_rename',
    'resources',
    'resources_v2',
    'instances',
    'container_full',
    'api_filtering',
    'container_backup',
    'profile_usedby',
    'network',
    'network_leases',
    'network_state',
    'network_expanded_state',
    'certificate_update',
    'certificate_token',
    'explicit_trust_token',
    'container_push',
    'container_push_target',
    'container_only_migration',
    'container_exec_recording',
    'container_exec_signal_handling',
    'container_exec_user_group_cwd',
    'directory_manipulation',
    'file_delete',
    'file_append',
    'file_symlinks',
    'snapshot_expiry',
    'snapshot_expiry_creation',
    'console',
]

# `lxc` and pylxd report these architectures; the kernel's own name comes first.
ARCHITECTURE_ALIASES = {'x86_64': ['x86_64', 'i686'], 'aarch64': ['aarch64', 'armv7l']}


@routes.get('/')
async def get_root(request):
    return response.sync(['/1.0'])


def _os_release():
    values = {}
    try:
        with open('/etc/os-release') as f:
            for line in f:
                key, _, value = line.strip().partition('=')
                values[key] = value.strip('"')
    except OSError:
        pass
    return values.get('NAME', ''), values.get('VERSION_ID', '')


def server_info(daemon, trusted):
    public = {
        'api_extensions': API_EXTENSIONS,
        'api_status': 'stable',
        'api_version': '1.0',
        'auth': 'trusted' if trusted else 'untrusted',
        'auth_methods': ['tls'],
        'public': False,
    }
    if not trusted:
        return public
    config = daemon.db.config()
    if 'core.trust_password' in config:
        config['core.trust_password'] = True
    os_name, os_version = _os_release()
    uname = os.uname()
    machine = platform.machine()
    with open(daemon.config.path('server.crt')) as f:
        certificate = f.read()
    environment = {
        'addresses': daemon.https_addresses(),
        'architectures': ARCHITECTURE_ALIASES.get(machine, [machine]),
        'certificate': certificate,
        'certificate_fingerprint': daemon.certificate_fingerprint,
        'driver': 'lxc',
        'driver_version': daemon.lxc_version,
        'firewall': 'nftables',
        'kernel': uname.sysname,
        'kernel_architecture': machine,
        'kernel_features': {'seccomp_listener': 'false', 'shiftfs': 'false',
                            'idmapped_mounts': 'false', 'netnsid_getifaddrs': 'true',
                            'uevent_injection': 'true', 'unpriv_fscaps': 'true'},
        'kernel_version': uname.release,
        'lxc_features': {},
        'os_name': os_name,
        'os_version': os_version,
        'project': 'default',
        'server': 'nova-lxd',
        'server_clustered': False,
        'server_event_mode': 'full-mesh',
        'server_name': socket.gethostname(),
        'server_pid': os.getpid(),
        'server_version': daemon.version,
        'storage': daemon.default_storage_driver(),
        'storage_version': '',
        'storage_supported_drivers': daemon.storage_drivers_info(),
    }
    return dict(public, config=config, environment=environment)


@routes.get('/1.0')
async def get_server(request):
    info = server_info(request.app['daemon'], request['trusted'])
    etag = response.etag_of(info.get('config'))
    return response.sync(info, etag=etag)


async def _update(request, merge):
    daemon = request.app['daemon']
    current = daemon.db.config()
    response.check_etag(request, response.etag_of(server_info(daemon, True)['config']))
    body = await response.json_body(request)
    wanted = server_config.validate_server_config(body.get('config', {}))
    new = dict(current) if merge else {}
    if merge:
        for key, value in body.get('config', {}).items():
            if value in (None, ''):
                new.pop(key, None)
    new.update(wanted)
    if 'core.trust_password' in wanted:
        new['core.trust_password'] = server_config.hash_password(wanted['core.trust_password'])
    await daemon.apply_server_config(new)
    return response.sync({})


@routes.put('/1.0')
async def put_server(request):
    return await _update(request, merge=False)


@routes.patch('/1.0')
async def patch_server(request):
    return await _update(request, merge=True)
