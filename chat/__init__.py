"""chat: a multi-client TCP chat server, a thread per client and one lock around the room."""

__version__ = "0.1.0"
