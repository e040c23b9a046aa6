"""`userlb announce`: announce the running director's VIPs over BGP while the
director is fit to serve them, withdraw them when it is not.

It runs as an ExaBGP API process (ExaBGP's `process { run ...; encoder
text; }`): it writes ExaBGP's text API lines (`announce route VIP/32
next-hop self`, `withdraw route ...`) on stdout and reads ExaBGP's answers
(`done`, `error`, `shutdown`) on stdin.  What it announces comes from the
director itself, over its control socket (userlb/control/protocol.py).

The modules, one job each:

    exabgp.py    the API lines it writes and the answers it reads (no I/O)
    fitness.py   what a look at the director says, rise/fall counters, and
                 which prefixes should be announced (no I/O)
    probe.py     one look at the director: control socket and TUN device
    speaker.py   the loop: look, decide, write, wait for the ACK
    bird.py      the BIRD 2 snippet of `userlb bird-config`

docs/scale-out.md has the production recipe.
"""
