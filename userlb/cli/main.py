"""`userlb` command line: dispatches `userlb COMMAND ...` to userlb.cli.COMMAND.main(argv)."""
import importlib
import sys

COMMANDS = {
    "run": "run the director on a TUN device",
    "adm": "ipvsadm-compatible administration of a running director",
    "simulate": "offline: which real server gets this flow",
    "check-config": "check a keepalived.conf (as `run --keepalived` reads it)",
    "lab": "network-namespace lab: up | demo | status | kill-director | start-director"
           " | experiment | down",
    "demo": "what `make demo` runs",
    "ipvsadm-shim": "install | remove userlb's ipvsadm as /sbin/ipvsadm",
    "cleanup": "remove the routes and rules a killed `userlb run` left",
    "announce": "ExaBGP API process: announce the director's VIPs over BGP while it is fit",
    "bird-config": "print a BIRD 2 snippet that announces the director's VIPs",
}


def version():
    """The installed distribution's version (pyproject.toml is its one home)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version
    try:
        return dist_version("userlb")
    except PackageNotFoundError:      # running from a source tree that is not installed
        return "unknown (not installed)"


def usage(out=sys.stderr):
    print("usage: userlb COMMAND [ARGS...]   (userlb COMMAND --help for its options;"
          " userlb --version)\n\ncommands:", file=out)
    width = max(map(len, COMMANDS))
    for name, text in COMMANDS.items():
        print(f"  {name:<{width}}  {text}", file=out)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        usage(sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version", "version"):
        print(f"userlb {version()}")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"userlb: unknown command {cmd!r}", file=sys.stderr)
        usage()
        return 2
    try:
        mod = importlib.import_module(f"userlb.cli.{cmd.replace('-', '_')}")
    except ModuleNotFoundError as e:
        if e.name == f"userlb.cli.{cmd.replace('-', '_')}":
            print(f"userlb: command {cmd!r} is not available in this build", file=sys.stderr)
            return 2
        raise
    return mod.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
