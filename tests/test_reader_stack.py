"""A reader thread's C stack stays two pages, whatever its client does (#14, memory per client).

A thread keeps every page of its stack it ever touched. CPython's list sort puts a 4 KiB
scratch array on the C stack of the thread that sorts, so one `sorted()` on a reader's path
(the names in a room's welcome, NAMES, CAP LS, a history answer) made that reader's stack three
pages instead of two for as long as its client stayed: 20 KiB per idle client in a room instead
of 16 (docs/performance.md, "Sixth pass"). The hub and the dialects put short lists in order with
`chat.protocol.in_order` instead; this test fails if a sort, or anything else as deep, comes back
on what every client does.

The server runs in a fresh process: glibc reuses the stacks of threads that ended, with the
pages they touched, so readers started after other tests' threads would not show their own.
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 12  # of each front-end

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
    reason="reads /proc/self/smaps; thread stacks as glibc lays them out",
)

# Runs in the child: a server with history, JSON and IRC clients that join, talk and ask
# (each waits for its answers), then every thread stack's resident size in KiB.
CHILD = """
import json, re, sys, threading
from chat.config import ServerConfig
from chat.server import ChatServer
from tests.peers import IrcPeer, JsonPeer

STACK = 3 << 20  # every thread from here on: an odd size, to tell its stack from the rest
threading.stack_size(STACK)

def stack_kib():
    sizes, size = [], None
    for line in open("/proc/self/smaps"):
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            size = end - start
        elif line.startswith("Rss:") and size is not None and STACK - (64 << 10) < size <= STACK:
            sizes.append(int(line.split()[1]))  # (less the guard page, a mapping of its own)
    return sizes

n, db = int(sys.argv[1]), sys.argv[2]
server = ChatServer(ServerConfig(port=0, irc_port=0, history_db=db, flood_rate=0)).start()
before = len(stack_kib())
peers = []
for i in range(n):
    json_peer = JsonPeer(server.address, f"j{i}")
    json_peer.send_json({"type": "say", "text": f"hello from j{i}"})
    json_peer.send_json({"type": "who"})
    json_peer.send_json({"type": "users"})
    json_peer.send_json({"type": "history", "target": "#lobby", "limit": 10})
    json_peer.sync()
    irc = IrcPeer(server.irc_address)
    irc.send("CAP LS 302\\r\\nCAP END\\r\\n")
    irc.register(f"i{i}")
    for line in ("JOIN #lobby", "NAMES #lobby", "WHO #lobby", f"PRIVMSG j{i} :hi",
                 "CHATHISTORY LATEST #lobby * 10", "CAP LIST", "LIST"):
        irc.send_line(line)
    irc.sync()
    peers += [json_peer, irc]
sizes = stack_kib()
print(json.dumps({"stacks": sizes, "before": before}))
for peer in peers:
    peer.close()
server.stop()
"""


@pytest.mark.timeout(60)
def test_every_reader_keeps_a_two_page_stack_after_joining_talking_and_asking(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(CLIENTS), str(tmp_path / "history.sqlite3")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    )
    report = json.loads(result.stdout.splitlines()[-1])
    sizes = report["stacks"]
    readers = 2 * CLIENTS
    assert len(sizes) == report["before"] + readers
    two_pages = 2 * resource.getpagesize() // 1024  # KiB
    # Every reader at two pages; the server's own few threads (accept, sender, waker, history
    # writer, log writer) may be deeper.
    assert sum(1 for kib in sizes if kib <= two_pages) >= readers, sorted(sizes)
