"""chat-client: the interactive terminal client for the chat server."""
