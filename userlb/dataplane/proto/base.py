"""The `Protocol` interface (see the package docstring)."""


class Protocol:
    """One L4 protocol's part of the director (kernel struct ip_vs_protocol)."""

    __slots__ = ("name", "protocol", "next_in", "next_out", "next_in_only")

    def __init__(self, name, protocol, next_in, next_out, next_in_only=None):
        self.name = name
        self.protocol = protocol
        self.next_in = next_in        # (flags << 4 | state) -> state, client -> server
        self.next_out = next_out      # the same, server -> client
        # client -> server for "no output" entries (direct routing, tunnels:
        # docs/ipvs.md §4.2); the INPUT table when the protocol has no other
        self.next_in_only = next_in if next_in_only is None else next_in_only

    def conn_schedule(self, flags, sloppy):
        """True if a packet with these flags and no entry may create one."""
        raise NotImplementedError

    def state_name(self, state):
        raise NotImplementedError
