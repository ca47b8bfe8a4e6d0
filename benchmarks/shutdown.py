"""Shutdown: SIGTERM to exit with N clients connected, idle or all hanging up at the signal.

    python benchmarks/shutdown.py                              # 2,000 / 5,000 / 10,000
    python benchmarks/shutdown.py --clients 10000 --baseline-tree ../old-checkout

Each run starts a fresh `chat-server`, registers N text clients (benchmarks/big_room.py's
crowd: one selector in this process), then either sends SIGTERM (idle: every client must read
the goodbye before its EOF) or closes every client socket and sends SIGTERM at once (hang-up).
Measured: the time from the signal (from the first hang-up, for hang-up) to the server's exit,
the server's CPU seconds in that time, and how many clients read the goodbye. With
--baseline-tree the same runs alternate with a server from another checkout (e.g. a git
worktree of an older commit), and the table gives the ratio old/new. Linux only; every phase
is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import big_room

README_PROMISE_S = 2.0


def run_once(count: int, hangup: bool, tree: Path | None, keep_log: str = "") -> dict[str, Any]:
    saved = command = big_room.server_command
    if tree is not None:  # the same options, the code of another checkout

        def command(quiet: int, clients: int) -> list[str]:
            start = f"import runpy, sys; sys.path[0] = {str(tree)!r}; " + (
                "runpy.run_module('chat', run_name='__main__', alter_sys=True)"
            )
            return [big_room.PY, "-c", start, *saved(quiet, clients)[3:]]

    big_room.server_command = command
    try:
        result = big_room.shutdown(count, hangup, keep_log)
        result["load"] = os.getloadavg()[0]  # the machine may be shared: say how busy it was
        return result
    finally:
        big_room.server_command = saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="*", default=[2000, 5000, 10000])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--baseline-tree", type=Path, help="a checkout to compare with")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--logs", type=Path, help="keep each server's log in this directory")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}", file=sys.stderr)
    trees: list[tuple[str, Path | None]] = [("this tree", None)]
    if args.baseline_tree is not None:
        trees.insert(0, ("baseline", args.baseline_tree.resolve()))
    rows = []
    for count in args.clients:
        for hangup in (False, True):
            for _round in range(args.rounds):
                for name, tree in trees:
                    log = ""
                    if args.logs is not None:
                        args.logs.mkdir(parents=True, exist_ok=True)
                        how = "hangup" if hangup else "idle"
                        tag = "baseline" if tree is not None else "this"
                        log = str(args.logs / f"{count}-{how}-{tag}-{_round}.log")
                    result = run_once(count, hangup, tree, log)
                    row = {"clients": count, "hangup": hangup, "tree": name, **result}
                    rows.append(row)
                    print(
                        f"{count} {'hanging up' if hangup else 'idle'} {name}: "
                        f"exit {result['exit_s']:.2f} s, CPU {result['shutdown_cpu']:.2f} s, "
                        f"load {result['load']:.1f}"
                        + ("" if hangup else f", goodbyes {result['goodbyes']}/{count}"),
                        file=sys.stderr,
                        flush=True,
                    )
    print("| clients | at the signal | server | exit s | server CPU s | goodbye read |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        goodbyes = "-" if row["hangup"] else f"{row['goodbyes']}/{row['clients']}"
        print(
            f"| {row['clients']:,} | {'all hang up' if row['hangup'] else 'idle'} | "
            f"{row['tree']} | {row['exit_s']:.2f} | {row['shutdown_cpu']:.2f} | {goodbyes} |"
        )
    if args.baseline_tree is not None:
        print()
        for count in args.clients:
            for hangup in (False, True):
                mine = [r for r in rows if (r["clients"], r["hangup"]) == (count, hangup)]
                old = [r["exit_s"] for r in mine if r["tree"] == "baseline"]
                new = [r["exit_s"] for r in mine if r["tree"] == "this tree"]
                print(
                    f"{count:,} {'all hang up' if hangup else 'idle'}: exit time baseline / "
                    f"this tree = {sum(old) / len(old) / (sum(new) / len(new)):.1f}x"
                )
    late = [r for r in rows if r["tree"] == "this tree" and r["exit_s"] > README_PROMISE_S]
    print(
        f"\nruns of this tree over the README's {README_PROMISE_S:g} s: {len(late)}/"
        f"{sum(1 for r in rows if r['tree'] == 'this tree')}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
