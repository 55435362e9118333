"""`migrate verify`: prove a port by running it (original, port on 1 process, port on N processes)."""
