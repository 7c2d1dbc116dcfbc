"""Register the node's services in Keystone and create the flavor set, idempotently.

Run by cloud.sh with the admin credentials in OS_* (after `keystone-manage bootstrap` made the
admin user and Keystone's own endpoints). One process through openstacksdk instead of a few
dozen `openstack` invocations.

    bootstrap.py identity   service project, one user per service, services and endpoints
    bootstrap.py flavors    the flavor set (after Nova's API is up)
"""
import os
import sys

import openstack

PASSWORD = os.environ['AIO_PASSWORD']
REGION = 'RegionOne'

# service user / catalog name -> (service type, URL)
SERVICES = {
    'glance': ('image', 'http://127.0.0.1:9292'),
    'placement': ('placement', 'http://127.0.0.1:8778'),
    'nova': ('compute', 'http://127.0.0.1:8774/v2.1'),
    'neutron': ('network', 'http://127.0.0.1:9696'),
}

# name -> (vCPUs, RAM MiB, root disk GiB); system containers are small
FLAVORS = {
    'c1.tiny': (1, 128, 1),
    'c1.small': (1, 512, 2),
    'c1.medium': (2, 1024, 5),
}


def identity(conn):
    idc = conn.identity
    domain = idc.find_domain('default')
    project = (idc.find_project('service', domain_id=domain.id)
               or idc.create_project(name='service', domain_id=domain.id))
    admin_role = idc.find_role('admin')
    for name, (stype, url) in SERVICES.items():
        user = idc.find_user(name, domain_id=domain.id)
        if user is None:
            user = idc.create_user(name=name, password=PASSWORD, domain_id=domain.id)
        else:
            idc.update_user(user, password=PASSWORD)
        conn.identity.assign_project_role_to_user(project, user, admin_role)
        service = next(iter(idc.services(name=name)), None) or idc.create_service(
            name=name, type=stype)
        existing = {e.interface for e in idc.endpoints(service_id=service.id)}
        for interface in ('public', 'internal'):
            if interface not in existing:
                idc.create_endpoint(service_id=service.id, interface=interface, url=url,
                                    region_id=REGION)
    # the role Nova's and Neutron's policies give to service users
    if idc.find_role('service') is None:
        idc.create_role(name='service')
    service_role = idc.find_role('service')
    for name in SERVICES:
        conn.identity.assign_project_role_to_user(
            project, idc.find_user(name, domain_id=domain.id), service_role)


def flavors(conn):
    existing = {f.name for f in conn.compute.flavors()}
    for name, (vcpus, ram, disk) in FLAVORS.items():
        if name not in existing:
            conn.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=disk)


def main(argv):
    conn = openstack.connect(cloud='envvars')
    for step in argv[1:]:
        {'identity': identity, 'flavors': flavors}[step](conn)


if __name__ == '__main__':
    main(sys.argv)
