"""A TCP relay between one node and PostgreSQL, to cut that node off (a partition).

    python tcp_relay.py LISTEN_PORT TARGET_PORT

Every connection to 127.0.0.1:LISTEN_PORT is relayed to 127.0.0.1:TARGET_PORT. Stopped
with SIGSTOP, the relay still lets the kernel accept connections but moves no byte, in
either direction: to the node, PostgreSQL is black-holed as by a partition (no reset, no
error, only silence), while every other node reaches PostgreSQL directly. SIGCONT heals.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading


def pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def main() -> None:
    listen_port, target_port = int(sys.argv[1]), int(sys.argv[2])
    server = socket.create_server(("127.0.0.1", listen_port), backlog=128)
    print("relaying", flush=True)
    while True:
        client, _ = server.accept()
        upstream = socket.create_connection(("127.0.0.1", target_port))
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pipe, args=(a, b), daemon=True).start()


if __name__ == "__main__":
    main()
