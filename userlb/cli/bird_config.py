"""`userlb bird-config`: print a BIRD 2 snippet that announces the VIPs of a
director (for sites that run BIRD on the directors instead of ExaBGP).

    userlb bird-config [--control PATH | --rules FILE | --vip ADDR...] [--tun NAME]
                       [--health-loop [--rise N] [--fall N] [--interval S]]

The VIPs come from the running director (`-S -n` over its control socket,
default), from a rules file (ipvsadm -R lines) or from --vip.  The snippet
has one static protocol per family (`userlb_vips4`, `userlb_vips6`: each VIP
as a /32 or /128 into the TUN device, `check link on`) and an export filter
per family (`userlb_export4`, `userlb_export6`) for your BGP sessions.
--health-loop prints instead a shell loop that enables and disables those
protocols with birdc from `userlb announce --exit-code` (rise/fall).
docs/scale-out.md has the whole recipe.
"""
import argparse
import sys


def build_parser():
    from ..control.protocol import DEFAULT_PATH
    p = argparse.ArgumentParser(prog="userlb bird-config", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--control", default=None, metavar="PATH",
                     help=f"the running director's control socket (default {DEFAULT_PATH})")
    src.add_argument("--rules", metavar="FILE", help="a rules file (ipvsadm -R lines)")
    src.add_argument("--vip", action="append", metavar="ADDR", help="a VIP (repeatable)")
    p.add_argument("--tun", default="userlb0", metavar="NAME",
                   help="the director's TUN device (default userlb0)")
    p.add_argument("--health-loop", action="store_true",
                   help="print the health loop (shell) instead of the snippet")
    p.add_argument("--rise", type=int, default=3)
    p.add_argument("--fall", type=int, default=2)
    p.add_argument("--interval", type=float, default=1.0)
    return p


def main(argv):
    from ..announce import bird, probe
    from ..announce.exabgp import host_prefix
    from ..control import protocol as P
    from ..errors import ConfigError
    p = build_parser()
    a = p.parse_args(argv)
    if a.rise < 1 or a.fall < 1 or a.interval <= 0:
        p.error("--rise and --fall must be at least 1, --interval above 0")
    control = a.control or P.DEFAULT_PATH
    try:
        if a.vip:
            prefixes = sorted({host_prefix(v) for v in a.vip})
            source = "--vip"
        elif a.rules:
            with open(a.rules) as f:
                prefixes = sorted(probe.vips_of(f.read()))
            source = a.rules
        else:
            resp = P.request(control, {"argv": ["-S", "-n"]}, timeout=5.0)
            if not resp.get("ok"):
                print(f"userlb bird-config: {control}: {resp.get('error')}", file=sys.stderr)
                return 1
            prefixes = sorted(probe.vips_of(str(resp.get("output", ""))))
            source = f"the director on {control}"
    except ValueError as e:
        print(f"userlb bird-config: --vip: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"userlb bird-config: {a.rules}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"userlb bird-config: {e.filename or a.rules}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    except (P.NoDirector, P.ProtocolError, TimeoutError) as e:
        print(f"userlb bird-config: no answer from a director on {control} ({e}); "
              f"give --rules FILE or --vip ADDR", file=sys.stderr)
        return 1
    if a.health_loop:
        sys.stdout.write(bird.health_loop(control, a.tun, prefixes, a.rise, a.fall,
                                          a.interval))
    else:
        sys.stdout.write(bird.snippet(prefixes, a.tun, source))
    return 0
