"""What a load run found: `LoadReport` and `Latency`, the verdict (`ok`), as text or JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class Latency:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def latency_of(histogram: dict[int, int]) -> Latency | None:
    """The percentiles of latencies counted per microsecond (µs -> how many); None if none.

    The rank of percentile q among n is the nearest rank, ceil(q * n), as over a sorted list.
    """
    n = sum(histogram.values())
    if n == 0:
        return None
    quantiles = (0.50, 0.95, 0.99, 1.0)
    ranks = [min(n - 1, max(0, int(q * n + 0.5) - 1)) for q in quantiles]
    picked: list[float] = []
    seen = 0
    for micros in sorted(histogram):
        seen += histogram[micros]
        while len(picked) < len(ranks) and ranks[len(picked)] < seen:
            picked.append(micros / 1000)
    return Latency(*picked)


@dataclass
class LoadReport:
    """What happened; `ok` is True only if every client that kept up got exactly what it should."""

    clients: int
    slow_clients: int
    messages_per_client: int
    protocol: str
    joined: int = 0
    join_failures: dict[str, int] = field(default_factory=dict)
    messages_sent: int = 0
    # The verdict's count: from every bot whose messages were all handled (and none dropped by
    # flood control) to every other bot that kept up.
    deliveries_expected: int = 0
    deliveries_received: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    # Every delivery of a bot's message that any bot received, counted above or not (from a bot
    # flood control cut off, to a bot that left): what the rate measures.
    deliveries_arrived: int = 0
    delivery_span_s: float = 0.0  # from the first message sent to the last delivery's arrival
    delivery_rate: float = 0.0  # deliveries_arrived / delivery_span_s; 0 if none arrived
    latency: Latency | None = None
    disconnected: dict[str, int] = field(default_factory=dict)
    slow_clients_disconnected: dict[str, int] = field(default_factory=dict)
    flood_limited: int = 0
    # With --servers (a cluster): deliveries seen in an order other receivers disagree with.
    room_order_checked: bool = False
    room_order_disagreements: int = 0
    nick_clash_pairs: int = 0
    nick_clash_both_won: int = 0
    timed_out: str | None = None  # the phase the run was in when --duration ran out
    elapsed_s: float = 0.0
    # Deliveries are verified a slice at a time while the run goes on: the most bytes of them
    # that waited at once, and the most verified in one step of the loop.
    unverified_peak_bytes: int = 0
    verify_step_max: int = 0
    # Times a paced bot fell so far behind its schedule (the machine or the tool stalled) that
    # it did not catch up all at once but finished later, to stay under flood control.
    schedule_slips: int = 0

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and self.out_of_order == 0
            and self.room_order_disagreements == 0
            and self.nick_clash_both_won == 0
            and not self.join_failures
            and not self.disconnected  # kicked, crashed: it did not keep up, say so
            and self.timed_out is None
            and self.joined > 0
        )

    def to_json(self) -> str:
        data = asdict(self)
        data["ok"] = self.ok
        return json.dumps(data, indent=2)

    def format_text(self) -> str:
        lines = [
            f"clients            {self.joined} of {self.clients} joined"
            + (f", {self.slow_clients} slow (never read)" if self.slow_clients else "")
            + f", protocol {self.protocol}",
            f"messages sent      {self.messages_sent}",
            self._deliveries_line(),
            f"lost               {self.lost}",
            f"duplicated         {self.duplicated}",
            f"out of order       {self.out_of_order}",
        ]
        if self.room_order_checked:
            lines.append(f"room order         {self.room_order_disagreements} disagreements")
        uncounted = self.deliveries_arrived - self.deliveries_received - self.duplicated
        if uncounted > 0:
            lines.append(
                f"not counted        {uncounted} more arrived, from or to bots the count leaves "
                "out (flood control, disconnected, time ran out)"
            )
        if self.deliveries_arrived and self.delivery_rate:
            span = self.delivery_span_s
            took = f"{span * 1000:.1f} ms" if span < 1 else f"{span:.2f} s"
            lines.append(
                f"delivery rate      {self.delivery_rate:,.0f} deliveries/s ("
                f"{self.deliveries_arrived} arrived in {took}, first send to last arrival)"
            )
        else:
            lines.append("delivery rate      not measured: no delivery arrived")
        if self.latency is not None:
            lat = self.latency
            lines.append(
                f"latency            p50 {lat.p50_ms:.1f} ms  p95 {lat.p95_ms:.1f} ms  "
                f"p99 {lat.p99_ms:.1f} ms  max {lat.max_ms:.1f} ms"
            )
        for reason, count in sorted(self.join_failures.items()):
            lines.append(f"never joined       {count} ({reason})")
        for reason, count in sorted(self.disconnected.items()):
            lines.append(f"disconnected       {count} ({reason})")
        for reason, count in sorted(self.slow_clients_disconnected.items()):
            lines.append(f"slow disconnected  {count} ({reason})")
        if self.flood_limited:
            lines.append(
                f"flood control      the server dropped lines of {self.flood_limited} bot(s); "
                "their messages are not counted as lost (pace with --rate, or run the server "
                "with --flood-rate 0 to go flat out)"
            )
        if self.nick_clash_pairs:
            lines.append(
                f"nickname clashes   {self.nick_clash_both_won} of {self.nick_clash_pairs} pairs "
                "BOTH got the same nickname"
            )
        if self.schedule_slips:
            lines.append(
                f"pacing             {self.schedule_slips} time(s) a bot fell behind its "
                "schedule (a stall) and finished later rather than burst"
            )
        if self.deliveries_arrived:
            waited_kib = self.unverified_peak_bytes / 1024
            lines.append(
                f"verification       in steps of at most {self.verify_step_max} deliveries; "
                f"at most {waited_kib:,.0f} KiB waited at once"
            )
        if self.timed_out is not None:
            lines.append(f"timed out          --duration ran out during the {self.timed_out} phase")
        lines.append(f"elapsed            {self.elapsed_s:.2f} s")
        lines.append("result             " + ("OK" if self.ok else "PROBLEMS"))
        return "\n".join(lines)

    def _deliveries_line(self) -> str:
        if self.deliveries_expected:
            return (
                f"deliveries         {self.deliveries_received} received of "
                f"{self.deliveries_expected} expected"
            )
        if self.joined < 2:
            why = "fewer than 2 bots joined"
        elif self.messages_sent == 0:
            why = "no messages sent"
        else:
            why = "no bot got all its messages through to another that kept up"
        return f"deliveries         none to check: {why}"
