"""A small authoritative DNS server for the tests, on dnspython: UDP and TCP on one port of 127.0.0.1.

It answers from zone texts (``dns.zone.from_text``), as an authoritative
server does: the records asked for (AA set), NOERROR with no answer when the
name exists without that type, NXDOMAIN (with the zone's SOA) when the name
does not exist, REFUSED outside its zones. An answer too large for the
client's UDP payload is sent truncated (TC), so the client retries over TCP,
as real resolvers do with long DKIM records. Each query is recorded
(``queries``), so a test can see what was asked.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Mapping

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone


class ZoneServer:
    def __init__(self, zones: Mapping[str, str]) -> None:
        self.zones = [dns.zone.from_text(text, origin=origin, relativize=False) for origin, text in zones.items()]
        self.queries: list[tuple[str, str, str]] = []  # (name, type, transport)
        self._udp: socketserver.ThreadingUDPServer | None = None
        self._tcp: socketserver.ThreadingTCPServer | None = None
        self._threads: list[threading.Thread] = []

    # --- answering ------------------------------------------------------------------------------------------

    def answer(self, wire: bytes, transport: str) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        [question] = query.question
        self.queries.append((question.name.to_text(), dns.rdatatype.to_text(question.rdtype), transport))
        zone = self._zone_of(question.name)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        response.flags |= dns.flags.AA
        node = zone.get_node(question.name)
        if node is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(self._soa(zone))
        else:
            rdataset = node.get_rdataset(dns.rdataclass.IN, question.rdtype)
            if rdataset is None:
                response.authority.append(self._soa(zone))  # NODATA (RFC 2308 §2.2)
            else:
                response.answer.append(dns.rrset.from_rdata_list(question.name, rdataset.ttl, list(rdataset)))
        if transport == "tcp":
            return response.to_wire()
        limit = max(512, query.payload) if query.edns >= 0 else 512
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.AA | dns.flags.TC
            return truncated.to_wire()

    def _zone_of(self, name: dns.name.Name) -> dns.zone.Zone | None:
        best = None
        for z in self.zones:
            if name.is_subdomain(z.origin) and (best is None or len(z.origin) > len(best.origin)):
                best = z
        return best

    @staticmethod
    def _soa(zone: dns.zone.Zone) -> dns.rrset.RRset:
        assert zone.origin is not None
        soa = zone.get_rdataset(zone.origin, dns.rdatatype.SOA)
        assert soa is not None, "a zone needs its SOA"
        return dns.rrset.from_rdata_list(zone.origin, soa.ttl, list(soa))

    # --- serving --------------------------------------------------------------------------------------------

    def start(self) -> ZoneServer:
        server = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                sock.sendto(server.answer(data, "udp"), self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn: socket.socket = self.request
                while True:
                    head = _read(conn, 2)
                    if head is None:
                        return
                    (size,) = struct.unpack("!H", head)
                    data = _read(conn, size)
                    if data is None:
                        return
                    out = server.answer(data, "tcp")
                    conn.sendall(struct.pack("!H", len(out)) + out)

        for _ in range(20):  # one port for both transports: take a free UDP port, then TCP on it
            udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Udp)
            try:
                tcp = socketserver.ThreadingTCPServer(("127.0.0.1", udp.server_address[1]), Tcp)
            except OSError:
                udp.server_close()
                continue
            break
        else:
            raise RuntimeError("no port free for both UDP and TCP")
        udp.daemon_threads = tcp.daemon_threads = True
        self._udp, self._tcp = udp, tcp
        for s in (udp, tcp):
            t = threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    @property
    def port(self) -> int:
        assert self._udp is not None
        return int(self._udp.server_address[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        for s in (self._udp, self._tcp):
            if s is not None:
                s.shutdown()
                s.server_close()
        for t in self._threads:
            t.join(5)


def _read(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def txt_strings(value: str) -> str:
    """A TXT value as zone-file strings of at most 255 octets each (RFC 1035 §3.3.14)."""
    parts = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts)
