"""Issue #14, the burst: chat-server's log writer lets lines gather after a wake-up
(chat/__main__.py `_GatheringListener`). No line may be lost, reordered or left unwritten at
stop(), whether it was queued before the writer woke, while it gathered, or just before stop().
"""

from __future__ import annotations

import logging
import queue
import threading

from chat.__main__ import _GatheringListener


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.first = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.first.set()


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("chat", logging.INFO, __file__, 0, message, None, None)


def test_every_line_is_written_once_in_order_and_stop_writes_what_is_queued() -> None:
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = _Collect()
    listener = _GatheringListener(records, handler)
    listener.start()
    records.put(_record("first"))  # wakes the writer, which then gathers
    assert handler.first.wait(5)
    per_thread = 200

    def log_lines(name: str) -> None:
        for n in range(per_thread):
            records.put(_record(f"{name} {n}"))

    writers = [threading.Thread(target=log_lines, args=(f"t{k}",)) for k in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(5)
    records.put(_record("last"))  # queued right before stop(): still written
    listener.stop()
    assert handler.lines[0] == "first"
    assert handler.lines[-1] == "last"
    assert len(handler.lines) == 2 + 4 * per_thread
    for k in range(4):
        mine = [line for line in handler.lines if line.startswith(f"t{k} ")]
        assert mine == [f"t{k} {n}" for n in range(per_thread)]


def test_a_writer_stopped_while_idle_ends_without_writing_anything() -> None:
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = _Collect()
    listener = _GatheringListener(records, handler)
    listener.start()
    listener.stop()
    assert handler.lines == []
