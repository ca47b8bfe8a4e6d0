"""`chat-load`: a load generator and delivery verifier; owns nothing of the server.

N bot clients join one room, each sends M numbered messages, and every bot checks what it
receives: each other bot's messages exactly once and in the order they were sent. The report
gives deliveries expected and received, lost, duplicated, out of order, the delivery rate and the
latency (receive time minus send time, both on this machine's clock, so no clock skew; on Linux
the receive time is the kernel's timestamp of the bytes' arrival at the bot's socket, so the
latency is the server's and the network's, not this one thread's delay in reading 100 sockets).
`--slow-clients K` adds K clients that join and then never read, to show head-of-line blocking.

The whole tool is one thread around one `selectors` loop with non-blocking sockets, so it can
drive hundreds of bots from one process and the numbers measure the server, not the tool.
It is a client program: it imports nothing from the server package `chat`.

Modules: `codecs` (the bots' wire formats), `run` (the bots, the loop, `run_load`, `LoadConfig`),
`report` (`LoadReport`, `Latency`, text and JSON), `cli` (`chat-load`, `python -m loadtool`).

Each message's text is `load <bot> #<seq> t=<time_ns>`. The run has barriers built on the
protocol's `ping` (JSON Lines), `PING` (IRC) or `/who` (text; its reply is `*** Online (N): ...`
or, from later servers, `*** Users in #room (N): ...`): a reply comes after everything the bot
sent before it has been handled and queued for every recipient. So, once every bot has its
"sent" reply, a second round of replies ("drain") arrives after every delivery, and the count is
exact, without guessing with timeouts. Every phase is bounded by `--duration`.

Use it as a library too:

    report = run_load(LoadConfig(port=port, clients=20, messages=50))
    assert report.ok
"""

from __future__ import annotations

from loadtool.report import Latency, LoadReport
from loadtool.run import LoadConfig, run_load

__all__ = ["Latency", "LoadConfig", "LoadReport", "run_load"]
