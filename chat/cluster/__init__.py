"""chat.cluster: several chat-server processes share one chat through Redis or Valkey.

Optional (`pip install 'threadroom[cluster]'`, for `redis`); imported only when a server is
given `--cluster URL`, never on the single-process default path. docs/cluster.md says how it
works and why; `ClusterHub` (chat/cluster/hub.py) is the whole of it.
"""

from __future__ import annotations

from chat.cluster.hub import ClusterError, ClusterHub, RemoteMember, redact

__all__ = ["ClusterError", "ClusterHub", "RemoteMember", "redact"]
