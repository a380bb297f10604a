"""What can go wrong between writing a request and reading its answer.

Lower-level errors (``socket``, ``ssl``, httpcore's) are translated into these once,
where the bytes move (connection.py, direct.py, proxy.py); outcome.py says what each one
means for the batch. Nothing outside the sink sees them::

    TransportError              no answer that can be used came back
    ├── ConnectError            the connection could not be opened
    │   ├── ConnectTimeout      ... within request_timeout_s
    │   └── CertificateRefused  the server's TLS certificate failed verification
    ├── WriteError              the request could not be sent in full
    │   └── WriteTimeout        ... within request_timeout_s
    ├── ReadError               the connection broke before the answer's head was complete
    │   ├── ReadTimeout         ... or no head came within request_timeout_s
    │   └── ClosedError         ... the server closed it
    └── ProtocolError           the bytes are not an HTTP/1.1 answer (http11.py)

    NotAdmitted                 leave to send was withdrawn once the connection was open:
                                nothing was written (throttle.py, Gate.admits)

``Timeout`` marks the three timeouts. The message of each says what happened in words,
never the request's headers (the key is among them).
"""

from __future__ import annotations


class TransportError(Exception):
    """No answer that can be used came back."""


class Timeout(TransportError):
    """The request's time (``request_timeout_s``) ran out."""


class ConnectError(TransportError):
    pass


class ConnectTimeout(ConnectError, Timeout):
    pass


class CertificateRefused(ConnectError):
    """Not transient: the configuration (``userflux.tls.ca_file``) or the server must change."""


class WriteError(TransportError):
    pass


class WriteTimeout(WriteError, Timeout):
    pass


class ReadError(TransportError):
    pass


class ReadTimeout(ReadError, Timeout):
    pass


class ClosedError(ReadError):
    """The server closed the connection before the answer's head was complete."""


class ProtocolError(TransportError):
    """The server's bytes are not an HTTP/1.1 answer."""


class NotAdmitted(Exception):
    """Asked once the connection was open, the gate said no: nothing was sent."""
