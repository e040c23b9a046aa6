"""`userlb check-config`: read a keepalived.conf as `userlb run --keepalived`
would, without running anything (keepalived's `-t`).

    userlb check-config [--rules] FILE

Exit 0 when FILE would be accepted (notes on stderr: what userlb accepts but
does differently, and the blocks it leaves to keepalived), 1 when it would be
refused: the message names the file and line.  --rules prints the ipvsadm
rules (`ipvsadm -S -n` format) of the starting configuration: real servers
whose checkers start down (`alpha`) are left out or at weight 0
(`inhibit_on_failure`), and the sorry server is in when the quorum is not met.
"""
import argparse
import sys

from ..errors import ConfigError


def main(argv, stdout=None, stderr=None):
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    p = argparse.ArgumentParser(prog="userlb check-config", description=__doc__.split("\n\n")[0])
    p.add_argument("--rules", action="store_true",
                   help="print the starting configuration as ipvsadm rules")
    p.add_argument("file", metavar="FILE", help="keepalived.conf")
    args = p.parse_args(argv)
    from ..control.keepalived import load
    from ..control.keepalived_apply import build_config, start_states
    try:
        conf = load(args.file)
        cfg = build_config(start_states(conf), conf.timeouts)
    except ConfigError as e:
        print(f"userlb check-config: {e}", file=err)
        print(f"userlb check-config: {args.file}: configuration refused", file=err)
        return 1
    for note in conf.notes:
        print(f"userlb check-config: note: {note}", file=err)
    for block in conf.skipped:
        print(f"userlb check-config: skipped (keepalived's part): {block}", file=err)
    nsvc = sum(len(vs.services) for vs in conf.virtual_servers)
    nrs = sum(len(vs.real_servers) for vs in conf.virtual_servers)
    nchk = sum(len(rs.checkers) for vs in conf.virtual_servers for rs in vs.real_servers)
    print(f"userlb check-config: {args.file}: OK: {len(conf.virtual_servers)} virtual "
          f"server(s), {nsvc} service(s), {nrs} real server(s), {nchk} checker(s)", file=err)
    if args.rules:
        for line in cfg.save():
            print(line, file=out)
    return 0
