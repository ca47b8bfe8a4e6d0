"""Where chat-client keeps its files: the XDG data directory, read by the spec's rules."""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """$XDG_DATA_HOME, else ~/.local/share. The XDG Base Directory spec says a relative path
    there is invalid and must be ignored: it would put files wherever the client was started."""
    value = os.environ.get("XDG_DATA_HOME", "")
    return Path(value) if os.path.isabs(value) else Path.home() / ".local" / "share"
