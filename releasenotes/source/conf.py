"""Sphinx configuration of nova-lxd's release notes (reno)."""
extensions = ['reno.sphinxext']
project = 'nova-lxd release notes'
copyright = 'nova-lxd developers'
master_doc = 'index'
exclude_patterns = ['_build']
html_theme = 'alabaster'
html_static_path = ['_static']
