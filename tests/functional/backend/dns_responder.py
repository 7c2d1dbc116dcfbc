"""A DNS server of the test's own on a loopback address: the 'outside world' of a network's DNS.

It answers A queries for one name and NXDOMAIN for every other, and keeps every query it sees,
so a test can tell which names a network's dnsmasq forwarded. A daemon's managed networks reach
it through their resolv file (`nameserver ADDRESS`); no query leaves this host.
"""
import contextlib
import random
import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class Responder:
    def __init__(self, name, address):
        self.name = name.lower().rstrip('.')
        self.address = address               # the answer for `name`
        self.queries = []                    # (name, type) of each query seen, in order
        self.sock = None

    def _answer(self, wire):
        query = dns.message.from_wire(wire)
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.RA
        for question in query.question:
            qname = question.name.to_text(omit_final_dot=True).lower()
            self.queries.append((qname, dns.rdatatype.to_text(question.rdtype)))
            if qname != self.name:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.A:
                reply.answer.append(dns.rrset.from_text(question.name, 60, 'IN', 'A',
                                                        self.address))
        return reply.to_wire()

    def _serve(self, stop):
        self.sock.settimeout(0.2)
        while not stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            try:
                self.sock.sendto(self._answer(wire), peer)
            except Exception:                # not DNS: no answer, as a server would
                continue

    def names(self):
        """The names queried so far."""
        return {name for name, _ in self.queries}


@contextlib.contextmanager
def responder(name, address):
    """A Responder listening on UDP port 53 of a random loopback address (listen_address)."""
    server = Responder(name, address)
    server.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # 127.0.0.0/8 is all loopback: an address of our own, whoever holds 127.0.0.1:53
    server.listen_address = '127.%d.%d.%d' % (random.randint(1, 254), random.randint(0, 255),
                                              random.randint(1, 254))
    server.sock.bind((server.listen_address, 53))
    stop = threading.Event()
    thread = threading.Thread(target=server._serve, args=(stop,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join()
        server.sock.close()
