"""Fuzz target: the ipvsadm command language (userlb.control.ipvsadm) and the
configuration's kernel semantics (userlb.control.config) on arbitrary text.

The input is decoded as UTF-8 (invalid bytes replaced) and read as an
`ipvsadm -R` stream.  Invariants: parsing raises nothing but ConfigError,
whose message names the line; applying the commands raises nothing but
ConfigError and, when refused, leaves the configuration as it was (all or
nothing); an accepted configuration saved with -S parses and applies again to
the same saved text.  Each line is also parsed on its own as argv words.

    python fuzz/ipvsadm_rules.py [libFuzzer options] [corpus dirs]
"""

from _common import instrumented, run

with instrumented(__name__ == "__main__"):
    from userlb.clock import ManualClock
    from userlb.control import ipvsadm as ia
    from userlb.control.config import Config
    from userlb.errors import ConfigError

BASE = "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m\n"
BASE_CMDS = ia.parse_rules(BASE)        # parsed once (Commands are not changed by applying)


def base_config():
    cfg = Config(clock=ManualClock(0.0))
    cfg.apply_batch(BASE_CMDS)
    return cfg


BEFORE = base_config().save()


def one_input(data):
    text = data.decode("utf-8", "replace")
    nlines = len(text.splitlines())
    for raw in text.splitlines()[:8]:
        try:
            words = ia.split_line(raw)
            ia.parse_argv(words)
        except ConfigError:
            pass
    try:
        cmds = ia.parse_rules(text)
    except ConfigError as e:
        assert e.line is not None and 1 <= e.line <= nlines, (e.line, nlines, str(e))
        return
    cfg = base_config()
    try:
        cfg.apply_batch(cmds)
    except ConfigError:
        assert cfg.save() == BEFORE, "a refused batch changed the configuration"
        return
    saved = cfg.save()
    again = Config(clock=ManualClock(0.0))
    again.apply_batch(ia.parse_rules("\n".join(saved) + "\n"))
    assert again.save() == saved, (saved, again.save())


if __name__ == "__main__":
    run(one_input)
