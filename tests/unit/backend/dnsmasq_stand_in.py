"""A stand-in program that plays dnsmasq for unit tests of the daemon's dnsmasq handling."""
from nova_lxd.backend.network import dnsmasq


def make(tmp_path, monkeypatch, script):
    """(program, Dnsmasq) for a network in tmp_path; the script sees tmp_path as $STATE."""
    program = tmp_path / 'dnsmasq'
    program.write_text(script)
    program.chmod(0o755)
    monkeypatch.setenv('STATE', str(tmp_path))
    return program, dnsmasq.Dnsmasq(str(tmp_path / 'net'), 'testnet', 'nltestbr0')
