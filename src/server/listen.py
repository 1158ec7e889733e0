"""Opening the server's ports: TLS material, the loopback rule, and one clear
line (no traceback) when an address cannot be used."""

from __future__ import annotations

import errno
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from geopera_kernel.server.config import Settings


class ListenError(Exception):
    """The server cannot open one of its ports; the message is the whole story."""


@dataclass(frozen=True)
class ServerTls:
    """A certificate chain and its private key (PEM), for gRPC and HTTP alike."""

    cert_file: Path
    key_file: Path
    cert_chain: bytes
    private_key: bytes

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.private_key, self.cert_chain)])

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def load_server_tls(cert_file: Path | None, key_file: Path | None) -> ServerTls | None:
    """The TLS material named by --tls-cert/--tls-key, checked to be a usable
    pair now rather than at the first handshake; None when neither is set."""
    if cert_file is None and key_file is None:
        return None
    if cert_file is None or key_file is None:
        raise ListenError("TLS needs both --tls-cert and --tls-key (GEOPERA_TLS_CERT, GEOPERA_TLS_KEY)")
    try:
        tls = ServerTls(cert_file, key_file, cert_file.read_bytes(), key_file.read_bytes())
        tls.ssl_context()
    except OSError as err:  # ssl.SSLError is an OSError too
        raise ListenError(f"cannot use the TLS certificate {cert_file} and key {key_file}: {err}") from None
    return tls


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ListenError(f"cannot listen on {address!r}: expected host:port") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another name, or "" (every interface)


def require_tls_beyond_loopback(addresses: list[str], tls: ServerTls | None, insecure: bool) -> None:
    """Tokens travel in every request: plaintext only on this machine's
    loopback, unless the operator says otherwise (`--insecure`)."""
    if tls is not None or insecure:
        return
    for address in addresses:
        if not is_loopback(split_address(address)[0]):
            raise ListenError(
                f"refusing to serve plaintext on {address}, beyond this machine: "
                "give --tls-cert/--tls-key, or --insecure (GEOPERA_INSECURE=1) to allow it"
            )


def ensure_free(address: str, what: str) -> None:
    """Fail now, before anything starts, when another process holds the
    address (gRPC would else share it with SO_REUSEPORT or fail late)."""
    host, port = split_address(address)
    if port == 0:
        return
    try:
        candidates = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ListenError(f"cannot listen on {address} ({what}): {err.strerror}") from None
    for family, kind, proto, _, sockaddr in candidates:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the real listeners do
            try:
                probe.bind(sockaddr)
            except OSError as err:
                # Anything else (an address family this host lacks) is left to the real bind.
                if err.errno in (errno.EADDRINUSE, errno.EACCES):
                    raise ListenError(f"cannot listen on {address} ({what}): {err.strerror}") from None


def check_ports(grpc_listen: str, http_listen: str | None, settings: Settings) -> ServerTls | None:
    """All that can keep the server from opening its ports, checked before
    anything starts; returns the TLS material when TLS is on."""
    tls = load_server_tls(settings.tls_cert, settings.tls_key)
    addresses = [grpc_listen, *([http_listen] if http_listen else [])]
    require_tls_beyond_loopback(addresses, tls, settings.insecure)
    ensure_free(grpc_listen, "gRPC")
    if http_listen:
        ensure_free(http_listen, "HTTP")
    return tls
