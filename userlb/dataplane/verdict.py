"""The engine's answers: verdicts of ``Engine.process`` and the names of its
drop reasons (the parser's own reasons are packet.ALL_REASONS; fragments':
frag.py).  One home, shared by the engine and its protocol modules."""

V_DROP = 0
V_FORWARD = 1
V_REPLY = 2
V_FORWARD_OUT = 3
V_XMIT_L2 = 4          # direct routing: send buf[:out_len] on the link to out_xl's server
V_XMIT_L2_OUT = 5      # the same with the bytes eng.out (a reassembled datagram)
V_XMIT_IP = 6          # tunnels: send eng.out (or each of a list) as the director's own
VERDICT_NAMES = ("DROP", "FORWARD", "REPLY", "FORWARD_OUT", "XMIT_L2", "XMIT_L2_OUT",
                 "XMIT_IP")

R_NOT_FOR_US = "not_for_us"
R_NO_ENTRY = "no_entry"                 # mid-stream TCP without entry, rst_on_no_entry=False
R_RST_NO_ENTRY = "rst_no_entry"         # a RST without entry (never answered)
R_NO_DEST = "no_dest"                   # scheduler found no destination, no reply possible
R_CONN_LIMIT = "conn_limit"
R_DEST_UNAVAILABLE = "dest_unavailable"
R_NO_SERVICE = "no_service"             # UDP to a VIP port without service
R_REPLY_AMBIGUOUS = "reply_ambiguous"   # reply w/o entry, several services own the server
R_ICMP_IGNORED = "icmp_ignored"         # ICMP that is not an error (echo, ...)
R_ICMP_NO_ENTRY = "icmp_no_entry"
R_TTL_EXPIRED = "ttl_expired"
R_NO_SCHEDULER = "no_scheduler"
R_FRAG_NOT_FIRST_PARSE = "frag_bad"
R_TUN_GSO = "tunnel_gso"               # a GSO super-packet for a tunnel (run with --no-offload)
R_TUN_TOO_BIG = "tunnel_too_big"       # encapsulated, too big for the path, no ICMP possible
