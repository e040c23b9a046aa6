"""The `Protocol` interface (see the package docstring)."""


class Protocol:
    """One L4 protocol's part of the director (kernel struct ip_vs_protocol)."""

    __slots__ = ("name", "protocol", "next_in", "next_out")

    def __init__(self, name, protocol, next_in, next_out):
        self.name = name
        self.protocol = protocol
        self.next_in = next_in        # (flags << 4 | state) -> state, client -> server
        self.next_out = next_out      # the same, server -> client

    def conn_schedule(self, flags, sloppy):
        """True if a packet with these flags and no entry may create one."""
        raise NotImplementedError

    def state_name(self, state):
        raise NotImplementedError
