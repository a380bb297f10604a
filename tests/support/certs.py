"""Certificates made for a test with the openssl command: a private CA, a server
certificate for the loopback names, a client certificate, and a PKCS#12 keystore.

Nothing here is ever trusted outside the test that made it: every file lives in the
test's own directory and the CA's key is thrown away with it.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
from dataclasses import dataclass

OPENSSL_TIMEOUT_S = 60
LOOPBACK_NAMES = "DNS:localhost,IP:127.0.0.1,IP:::1"


class CertError(RuntimeError):
    """openssl is missing or failed."""


@dataclass(frozen=True)
class Certs:
    """PEM files (and a PKCS#12 keystore of the server's key and certificate)."""

    ca: pathlib.Path
    server_cert: pathlib.Path
    server_key: pathlib.Path
    client_cert: pathlib.Path
    client_key: pathlib.Path
    server_p12: pathlib.Path
    p12_password: str


def _openssl(*args: str, cwd: pathlib.Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise CertError("the openssl command is not on PATH; the TLS tests need it")
    done = subprocess.run(
        [openssl, *args], cwd=cwd, capture_output=True, text=True, timeout=OPENSSL_TIMEOUT_S, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        raise CertError(f"openssl {' '.join(args[:2])} failed (exit {done.returncode}): {done.stderr[-2000:]}")


def _signed(directory: pathlib.Path, name: str, subject: str, extensions: str) -> None:
    """``name``.key and ``name``.pem, signed by ca.pem/ca.key in ``directory``."""
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-subj",
        subject,
        "-out",
        f"{name}.csr",
        cwd=directory,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.pem",
        cwd=directory,
    )


def make_certs(directory: pathlib.Path, p12_password: str = "keystore-pass-1234") -> Certs:
    """A CA, a server certificate for localhost/127.0.0.1/::1 and a client certificate."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=userflux-connector test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )
    _signed(
        directory,
        "server",
        "/CN=localhost",
        f"subjectAltName={LOOPBACK_NAMES}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    _signed(
        directory,
        "client",
        "/CN=userflux-connector test client",
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    )
    _openssl(
        "pkcs12",
        "-export",
        "-in",
        "server.pem",
        "-inkey",
        "server.key",
        "-certfile",
        "ca.pem",
        "-name",
        "server",
        "-out",
        "server.p12",
        "-passout",
        f"pass:{p12_password}",
        cwd=directory,
    )
    return Certs(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        server_p12=directory / "server.p12",
        p12_password=p12_password,
    )
