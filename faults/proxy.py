"""A TCP proxy in front of PostgreSQL that can reset or black-hole its connections.

The loader connects to ``127.0.0.1:port``; the proxy forwards each connection to the server's
Unix socket (or TCP address). ``reset_all()`` aborts every connection with an RST;
``blackhole_all()`` stops forwarding but keeps the sockets open and silent, the half-open
state that hangs a client with no deadline (RELIABILITY.md c.5).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


class FaultProxy:
    """Forward 127.0.0.1:<port> to ``target`` (a Unix socket path, or (host, port))."""

    def __init__(self, target: str | tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.blackholed: set[socket.socket] = set()  # the sockets themselves: ids get reused
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _upstream(self) -> socket.socket:
        if isinstance(self.target, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.target)
            return s
        return socket.create_connection(self.target)

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = self._upstream()
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if src in self.blackholed or dst in self.blackholed:
                    continue  # swallow: the peer waits forever for an answer
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def reset_all(self) -> int:
        """Abort every open connection with an RST (SO_LINGER 0); returns how many."""
        with self.lock:
            pairs, self.pairs = self.pairs, []
            self.blackholed.clear()
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    if s.family != socket.AF_UNIX:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked in recv
                    s.close()
        return len(pairs)

    def blackhole_all(self) -> int:
        """Stop forwarding on every open connection, leaving it open; returns how many."""
        with self.lock:
            for client, upstream in self.pairs:
                self.blackholed.update((client, upstream))
            return len(self.pairs)

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        self.reset_all()
