"""nova-lxd: system containers for OpenStack Nova."""
