"""`userlb cleanup`: remove every route and policy rule userlb installed in
this network namespace (e.g. after `kill -9` of `userlb run`).

    userlb cleanup [--tun NAME] [--table N]

Everything userlb installs carries protocol 245 (`proto 245` in `ip rule`
and `ip route`); without --tun all of it goes, and the kernel's
`from all lookup local` rule is put back at priority 0 if userlb had moved
it (VIPs that are local addresses, docs/steering.md).  With --tun only that
device's part goes (its `iif` rules, the rules of its table or --table N,
and what dead instances left); the rules shared by every instance go with
the last one.  Sysctls changed by a killed instance (ip_forward,
forwarding, rp_filter) are not known any more and are left as they are.
"""
import argparse
import sys


def main(argv):
    p = argparse.ArgumentParser(prog="userlb cleanup", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--tun", metavar="NAME", help="only what the instance on this device installed")
    p.add_argument("--table", type=int, default=None,
                   help="with --tun: the --table the instance ran with")
    args = p.parse_args(argv)
    from ..dataplane.steering import cleanup
    try:
        removed, errors = cleanup(args.tun, args.table)
    except Exception as e:   # noqa: BLE001 - no netlink, no permission
        print(f"userlb cleanup: {e}", file=sys.stderr)
        return 1
    for what in removed:
        print(f"removed {what}")
    if not removed:
        print("nothing of userlb's left in this namespace")
    for err in errors:
        print(f"userlb cleanup: {err}", file=sys.stderr)
    return 1 if errors else 0
