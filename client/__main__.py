"""Entry point of `chat-client` (not built yet: see the terminal-client issue)."""

import sys


def main() -> int:
    sys.stderr.write("chat-client is not built yet; use `nc HOST PORT` to join the chat.\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
