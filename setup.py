import pathlib

import setuptools


def requirements():
    lines = pathlib.Path(__file__).with_name('requirements.txt').read_text().splitlines()
    return [line.split('#')[0].strip() for line in lines if line.split('#')[0].strip()]


# nova.virt.lxd is named by hand: it is the only module shipped under nova's package (so that
# compute_driver = lxd.LXDDriver loads); nova's own __init__ files must never be shipped.
setuptools.setup(
    packages=setuptools.find_packages(include=['nova_lxd', 'nova_lxd.*']) + ['nova.virt.lxd'],
    install_requires=requirements())
