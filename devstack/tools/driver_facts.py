"""Facts the devstack plugin derives from the code instead of restating them.

    driver_facts.py tempest-flags      lines "section option value" for tempest.conf
    driver_facts.py glance-formats CONTAINER_FORMATS DISK_FORMATS
                                       the two comma lists with the formats nova-lxd needs added
    driver_facts.py tempest-image FILE lines "section option value": tempest's scenario image

Run with the python that has nova and nova-lxd installed (devstack's $PYTHON).
"""
import sys

# Glance's own defaults, used when glance-api.conf does not set the lists yet.
GLANCE_DEFAULT_CONTAINER_FORMATS = 'ami,ari,aki,bare,ovf,ova,docker,compressed'
GLANCE_DEFAULT_DISK_FORMATS = 'ami,ari,aki,vhd,vhdx,vmdk,raw,qcow2,vdi,iso,ploop'

# tempest [compute-feature-enabled] flag -> the LXDDriver methods that must be implemented
# (overridden from nova's ComputeDriver, whose versions raise NotImplementedError).
METHOD_FLAGS = {
    'resize': ('migrate_disk_and_power_off', 'finish_migration', 'confirm_migration',
               'finish_revert_migration'),
    'cold_migration': ('migrate_disk_and_power_off', 'finish_migration', 'confirm_migration'),
    'live_migration': ('pre_live_migration', 'live_migration',
                       'post_live_migration_at_destination'),
    'live_migrate_back_and_forth': ('pre_live_migration', 'live_migration',
                                    'post_live_migration_at_destination'),
    'pause': ('pause', 'unpause'),
    'suspend': ('suspend', 'resume'),
    'rescue': ('rescue', 'unrescue'),
    'snapshot': ('snapshot',),
    'shelve': ('snapshot', 'power_off', 'destroy'),
    'shelve_migrate': ('snapshot', 'power_off', 'destroy'),
    'console_output': ('get_console_output',),
    'change_password': ('set_admin_password',),
    'vnc_console': ('get_vnc_console',),
    'spice_console': ('get_spice_console',),
    'serial_console': ('get_serial_console',),
    'swap_volume': ('swap_volume',),
    'volume_backed_live_migration': ('pre_live_migration', 'live_migration', 'attach_volume'),
}
# tempest flag -> the ComputeDriver capability that decides it
CAPABILITY_FLAGS = {
    'interface_attach': 'supports_attach_interface',
    'volume_multiattach': 'supports_multiattach',
    'stable_rescue': 'supports_bfv_rescue',
}
# Block migration, personality files, disk_config, IDE buses and vTPMs are VM ideas with no
# container meaning; the driver has no volume encryptor support. Flags that Nova's API, Neutron
# or the deployment decide (enable_instance_password, metadata_service,
# can_migrate_between_any_hosts ...) are left to devstack.
# tempest's config_drive test looks for a `config-2` block device in the guest; nova-lxd's
# config drive is a read-only directory (cloud-init reads both), so that test cannot pass.
NEVER = ('block_migration_for_live_migration', 'personality', 'disk_config',
         'attach_encrypted_volume', 'config_drive', 'ide_bus', 'vtpm_live_migration')


def _driver_class():
    from nova.virt import driver as base
    from nova_lxd.virt import driver
    return base.ComputeDriver, driver.LXDDriver


def tempest_flags():
    base, lxd = _driver_class()

    def implemented(name):
        return getattr(lxd, name, None) is not getattr(base, name, None)

    flags = {flag: all(implemented(m) for m in methods)
             for flag, methods in METHOD_FLAGS.items()}
    flags.update({flag: bool(lxd.capabilities.get(cap))
                  for flag, cap in CAPABILITY_FLAGS.items()})
    # a capability flag without the method behind it would be a lie
    flags['interface_attach'] = flags['interface_attach'] and implemented('attach_interface')
    flags.update({flag: False for flag in NEVER})
    lines = ['compute-feature-enabled %s %s' % (flag, str(value))
             for flag, value in sorted(flags.items())]
    lines.append('volume-feature-enabled extend_attached_volume %s' %
                 bool(lxd.capabilities.get('supports_extend_volume')))
    return lines


def _merge(current, default, needed):
    items = [i.strip() for i in (current or default).split(',') if i.strip()]
    items += [n for n in needed if n not in items]
    return ','.join(items)


def glance_formats(container_formats, disk_formats):
    from nova_lxd.image import formats
    needed_disk = [formats.DISK_FORMAT] + list(formats.CONVERTIBLE_DISK_FORMATS)
    return [_merge(container_formats, GLANCE_DEFAULT_CONTAINER_FORMATS,
                   [formats.CONTAINER_FORMAT]),
            _merge(disk_formats, GLANCE_DEFAULT_DISK_FORMATS, needed_disk)]


def tempest_image(path):
    """The [scenario] image tempest uploads itself: the one nova-lxd-image built."""
    from nova_lxd.image import formats
    properties = {formats.PROP_IMAGE_FORMAT: formats.FORMAT_UNIFIED,
                  'hypervisor_type': formats.HYPERVISOR_TYPE}
    return ['scenario img_file %s' % path,
            'scenario img_container_format %s' % formats.CONTAINER_FORMAT,
            'scenario img_disk_format %s' % formats.DISK_FORMAT,
            'scenario img_properties %s' % ','.join('%s:%s' % kv
                                                    for kv in sorted(properties.items()))]


def main(argv):
    if argv[:1] == ['tempest-flags']:
        print('\n'.join(tempest_flags()))
    elif argv[:1] == ['tempest-image'] and len(argv) == 2:
        print('\n'.join(tempest_image(argv[1])))
    elif argv[:1] == ['glance-formats'] and len(argv) == 3:
        print('\n'.join(glance_formats(argv[1], argv[2])))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
