"""TLS to UserFlux: the certificate check and the client certificate, as configured.

The server's certificate is always verified: against the default CA bundle, or against
``userflux.tls.ca_file`` instead (a private CA, a TLS-inspecting proxy). The context is
built once, at start, where a bad file becomes a configuration error naming the key.
"""

from __future__ import annotations

import ssl

import certifi

from ..config.model import TlsSettings


class TlsFileError(ValueError):
    """A configured TLS file cannot be used; ``key`` names the setting."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(message)


def ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    """A verifying client context; TlsFileError if a configured file is unusable."""
    try:
        context = ssl.create_default_context(cafile=tls.ca_file or certifi.where())
    except (OSError, ssl.SSLError) as exc:
        raise TlsFileError("ca_file", f"cannot read a PEM CA bundle from {tls.ca_file!r}: {_why(exc)}") from None
    if tls.client_cert_file:
        try:
            context.load_cert_chain(tls.client_cert_file, tls.client_key_file)
        except (OSError, ssl.SSLError) as exc:
            files = tls.client_cert_file + (f" and {tls.client_key_file}" if tls.client_key_file else "")
            raise TlsFileError(
                "client_cert_file", f"cannot load a PEM certificate and its private key from {files}: {_why(exc)}"
            ) from None
    return context


def _why(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
