"""Sphinx configuration of the nova-lxd operator documentation."""
import os
import sys

sys.path.insert(0, os.path.abspath('../..'))   # doc/ext, and nova_lxd for the option reference

extensions = [
    'oslo_config.sphinxext',      # .. show-options:: nova_lxd  (the [lxd] reference)
    'doc.ext.support_matrix',     # .. support_matrix:: support-matrix.ini
]

project = 'nova-lxd'
copyright = 'nova-lxd developers'
master_doc = 'index'
exclude_patterns = ['_build']
html_theme = 'alabaster'
html_static_path = ['_static']
pygments_style = 'sphinx'
