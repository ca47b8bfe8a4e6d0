"""A reference chat server on asyncio streams, for comparison only (not part of the product).

It speaks the subset of chat's text protocol that chat-load's text bots use (nickname first,
`<nick> text` relayed to the others, `/who`, `/quit`, joins and leaves), written the
straightforward way the asyncio documentation shows: a coroutine per client, `write()` then
`await drain()` for every recipient. No flood control, no limits: it measures the approach.

    python benchmarks/asyncio_server.py --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

clients: dict[str, asyncio.StreamWriter] = {}  # one event loop, one thread: no lock needed


async def broadcast(line: str, skip: str | None = None) -> None:
    data = line.encode()
    for nick, writer in list(clients.items()):
        if nick != skip:
            writer.write(data)
            with contextlib.suppress(ConnectionError):
                await writer.drain()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(f"* Welcome to chat! {len(clients)} online.\n* Choose a nickname:\n".encode())
    nick = None
    reason = "connection lost"
    try:
        while nick is None:
            line = await reader.readline()
            if not line:
                return
            wanted = line.decode(errors="replace").strip()
            if wanted.lower() in (n.lower() for n in clients):
                writer.write(f"! nickname {wanted} is taken\n* Choose a nickname:\n".encode())
                continue
            nick = wanted
            clients[nick] = writer
            online = ", ".join(sorted(clients))
            writer.write(f"* Hello {nick}. Online: {online}. Type /help for commands.\n".encode())
            await broadcast(f"*** {nick} joined ({len(clients)} online)\n")
        while line := await reader.readline():
            text = line.decode(errors="replace").rstrip("\r\n")
            if text == "/who":
                writer.write(
                    f"*** Online ({len(clients)}): {', '.join(sorted(clients))}\n".encode()
                )
                await writer.drain()
            elif text.startswith("/quit"):
                reason = f"quit: {text[6:]}" if text[6:] else "quit"
                break
            elif text:
                await broadcast(f"<{nick}> {text}\n", skip=nick)
    except ConnectionError:
        pass
    finally:
        if nick is not None and clients.get(nick) is writer:
            del clients[nick]
            await broadcast(f"*** {nick} left ({reason})\n")
        writer.close()


async def serve(host: str, port: int) -> None:
    server = await asyncio.start_server(handle, host, port)
    logging.info("listening on %s:%d", host, server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
