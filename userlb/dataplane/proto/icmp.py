"""ICMP / ICMPv6 (docs/ipvs.md §5.4): the director translates only errors,
matched on the connection of the packet they quote; everything else (echo,
...) is not for it.  The engine looks the quoted flow up (flipped: the quoted
packet travelled the other way) and rewrites through the forwarding method's
ICMP step."""
from ..packet import (
    AF_INET,
    FRAG_LATER,
    ICMP_PARAMETERPROB,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    P_AF,
    P_FRAG,
    P_ICMP_TYPE,
    P_INNER,
    P_PROTO,
)
from ..verdict import R_ICMP_IGNORED, R_ICMP_NO_ENTRY


def refuse(r):
    """None if the ICMP message `r` is an error the director handles (its
    quoted packet is TCP, UDP or SCTP and carries its ports), else the drop reason."""
    inner = r[P_INNER]
    if inner is None:
        return R_ICMP_IGNORED                 # not an error
    if r[P_ICMP_TYPE] == ICMP_PARAMETERPROB and r[P_AF] == AF_INET:
        return R_ICMP_IGNORED                 # not one of the errors IPVS handles
    iproto = inner[P_PROTO]
    if ((iproto != IPPROTO_TCP and iproto != IPPROTO_UDP and iproto != IPPROTO_SCTP)
            or inner[P_FRAG] == FRAG_LATER):
        return R_ICMP_NO_ENTRY
    return None
