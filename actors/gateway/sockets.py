"""The gateway's listening sockets, and how ``omni up --workers`` shares one port.

Worker 0 (the main process) binds the port first, after checking that no other group
holds it; the others join with ``SO_REUSEPORT``. Worker 0 then attaches a classic BPF
program to the group that sends new connections to the others at random, and takes
them itself only while none of them listens (one restarting), so the port never
refuses a connection. Linux only; where the kernel refuses the program, its hash
spreads connections as before.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct
from typing import Final

__all__ = ["check_free", "listen", "steer_to_others"]

log = logging.getLogger("omnillm.gateway")


def check_free(host: str, port: int) -> None:
    """``OSError`` (address in use) if anything listens on ``port``, even a group of
    ``SO_REUSEPORT`` sockets another ``omni up --workers`` of this user holds, which a
    socket of our own group would silently join."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        probe.bind((host, port))


def listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """The listening socket, bound here so a taken port is an ``OSError`` to the caller
    (uvicorn would exit the process). ``reuse_port``: processes of this user may listen
    on the same port (``SO_REUSEPORT``), and the kernel spreads connections over them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP, and with Nagle on, every streamed answer after the first
    # on a keep-alive connection waited about 40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


_SO_ATTACH_REUSEPORT_CBPF: Final = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)
_SKF_AD_RANDOM: Final = 0xFFFFF000 + 56  # SKF_AD_OFF + SKF_AD_RANDOM, as an unsigned k


def steer_to_others(sock: socket.socket, others: int) -> None:
    """Send the ``SO_REUSEPORT`` group's new connections to the ``others`` sockets that
    join after ``sock``, at random; ``sock`` gets them only when none of those listens.

    A classic BPF program on the group returns a socket's index in it: ``sock``, first
    in, is 0, the others 1..``others`` (a socket that closes is replaced by the last
    one). The program picks ``1 + random % others``; an index past the group's end (a
    worker down) makes the kernel fall back to its hash, which includes ``sock``.
    Linux only; where the kernel refuses it, the hash spreads connections as before.
    """
    program = [
        (0x20, _SKF_AD_RANDOM),  # ld rand        (BPF_LD | BPF_W | BPF_ABS)
        (0x94, others),  # mod #others    (BPF_ALU | BPF_MOD | BPF_K)
        (0x04, 1),  # add #1         (BPF_ALU | BPF_ADD | BPF_K)
        (0x16, 0),  # ret a          (BPF_RET | BPF_A)
    ]
    code = ctypes.create_string_buffer(
        b"".join(struct.pack("HBBI", op, 0, 0, k) for op, k in program)
    )
    try:
        sock.setsockopt(
            socket.SOL_SOCKET,
            _SO_ATTACH_REUSEPORT_CBPF,
            struct.pack("HL", len(program), ctypes.addressof(code)),
        )
    except OSError as exc:
        log.warning("gateway: cannot steer connections to the workers (%s); spreading them", exc)
