"""`userlb simulate` end to end: in-process through main(argv) and as a
subprocess through the installed `userlb` script; the kernel vectors'
`reproduce_with` replayed for every lookup under every flag combination."""
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from userlb.cli import simulate
from userlb.cli.main import main as userlb_main

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"
USERLB = ROOT / ".venv" / "bin" / "userlb"

MH = json.loads((VECTORS / "mh_vectors.json").read_text())["scenarios"]
SH = json.loads((VECTORS / "sh_vectors.json").read_text())["scenarios"]
FLAG_SETS = {"mh": ["none", "mh-port", "mh-fallback", "mh-fallback,mh-port"],
             "sh": ["none", "sh-port", "sh-fallback", "sh-fallback,sh-port"]}


def run(argv, stdin=""):
    out, err = io.StringIO(), io.StringIO()
    rc = simulate.main(argv, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def run_sub(argv, stdin=""):
    p = subprocess.run([str(USERLB), "simulate"] + argv, input=stdin, capture_output=True,
                       text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def ep(addr, port):
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def rules_with_flags(scenario, flags):
    """The scenario's commands with the -A line's -b replaced by `flags`."""
    out = []
    for line in scenario["reproduce_with"]:
        if re.match(r"^(ipvsadm )?-A ", line):
            line = re.sub(r" -b \S+", "", line)
            if flags != "none":
                line += f" -b {flags}"
        out.append(line)
    return "\n".join(out) + "\n"


def flows_of(scenario):
    vip = scenario["service"]
    proto = scenario["protocol"]
    return "".join(f"{proto} {ep(x['client'], x['cport'])} {vip}\n" for x in scenario["lookups"])


def expected(scenario, flags):
    dests = scenario["dests"]
    vip = scenario["service"]
    out = []
    for x in scenario["lookups"]:
        i = x[flags]
        dest = "-" if i is None else ep(dests[i]["addr"], dests[i]["port"])
        out.append(f"{scenario['protocol']} {ep(x['client'], x['cport'])} {vip} -> {dest}")
    return out


@pytest.fixture
def files(tmp_path):
    def write(name, text):
        p = tmp_path / name
        p.write_text(text)
        return str(p)
    return write


BASIC = """\
# three real servers behind one VIP
ipvsadm -A -t 10.0.0.100:80 -s mh -b mh-port
ipvsadm -a -t 10.0.0.100:80 -r 10.0.0.1:80 -m -w 1
ipvsadm -a -t 10.0.0.100:80 -r 10.0.0.2:80 -m -w 1
ipvsadm -a -t 10.0.0.100:80 -r 10.0.0.3:80 -m -w 1
"""


# ------------------------------------------------------------- the vectors

@pytest.mark.parametrize("sched,scenario", [("mh", s) for s in MH] + [("sh", s) for s in SH],
                         ids=lambda x: x if isinstance(x, str) else x["name"])
def test_vectors_every_lookup_every_flag_set(sched, scenario, files):
    assert scenario["scheduler"] == sched
    flows = files("flows", flows_of(scenario))
    for flags in FLAG_SETS[sched]:
        rules = files(f"rules-{flags}", rules_with_flags(scenario, flags))
        rc, out, err = run(["--rules", rules, "--flows", flows])
        assert (rc, err) == (0, "")
        assert out.splitlines() == expected(scenario, flags), flags


@pytest.mark.parametrize("sched,scenario", [("mh", s) for s in MH] + [("sh", s) for s in SH],
                         ids=lambda x: x if isinstance(x, str) else x["name"])
def test_vectors_table(sched, scenario, files):
    rules = files("rules", rules_with_flags(scenario, "none"))
    proto, vip = scenario["protocol"], scenario["service"]
    rc, out, err = run(["--rules", rules, "--table", vip, "--proto", proto])
    assert (rc, err) == (0, "")
    dests = scenario["dests"]
    want = [f"{i} {'-' if t < 0 else ep(dests[t]['addr'], dests[t]['port'])}"
            for i, t in enumerate(scenario["table"])]
    assert out.splitlines() == want


@pytest.mark.parametrize("scenario", [MH[1], MH[4], MH[5], SH[1]], ids=lambda s: s["name"])
def test_vectors_through_the_installed_script(scenario, files):
    sched = scenario["scheduler"]
    flags = FLAG_SETS[sched][3]
    rules = files("rules", rules_with_flags(scenario, flags))
    rc, out, err = run_sub(["--rules", rules, "--flows", "-"], stdin=flows_of(scenario))
    assert (rc, err) == (0, "")
    assert out.splitlines() == expected(scenario, flags)


# ------------------------------------------------------------------- flows

def test_flows_text_and_json(files):
    rules = files("rules", BASIC)
    flows = ("tcp 192.168.1.100:12345 10.0.0.100:80\n"
             "# comment line\n\n"
             "TCP 192.168.1.100:12345 10.0.0.100:80   # trailing comment\n"
             "udp 192.168.1.100:12345 10.0.0.100:80\n"
             "tcp 192.168.1.100:12345 10.0.0.100:81\n"
             "tcp [2001:db8::9]:4000 [2001:db8::100]:80\n")
    rc, out, err = run(["--rules", rules], stdin=flows)          # stdin by default
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    # docs/ipvs.md §1.8 worked example: 192.168.1.100:12345 with mh-port -> slot 3989
    assert lines[0].startswith("tcp 192.168.1.100:12345 10.0.0.100:80 -> 10.0.0.")
    assert lines[1] == lines[0]
    assert lines[2:] == ["udp 192.168.1.100:12345 10.0.0.100:80 -> -",
                         "tcp 192.168.1.100:12345 10.0.0.100:81 -> -",
                         "tcp [2001:db8::9]:4000 [2001:db8::100]:80 -> -"]
    rc, out, err = run(["--rules", rules, "--flows", "-", "--json"], stdin=flows)
    data = json.loads(out)
    assert [d["dest"] for d in data[2:]] == [None, None, None]
    assert data[0] == {"proto": "tcp", "client": "192.168.1.100:12345",
                       "vip": "10.0.0.100:80", "dest": lines[0].split(" -> ")[1]}


def test_vector_worked_example_slot(files):
    # v4_three_equal, client 192.168.1.100:12345: the vector says which dest
    sc = MH[1]
    rules = files("rules", rules_with_flags(sc, "mh-port"))
    look = [x for x in sc["lookups"] if x["client"] == "192.168.1.100" and x["cport"] == 12345]
    rc, out, _ = run(["--rules", rules], stdin="tcp 192.168.1.100:12345 10.0.0.100:80\n")
    assert len(look) == 1 and look[0]["bucket_port"] == 3989
    d = sc["dests"][look[0]["mh-port"]]
    assert out.strip().endswith(f"-> {d['addr']}:{d['port']}")
    # the documented slot (docs/ipvs.md §1.8) through --table
    rc, table, _ = run(["--rules", rules, "--table", "10.0.0.100:80"])
    slot = table.splitlines()[3989].split()[1]
    assert out.strip().endswith("-> " + slot)


def test_kernel_add_order_matters_and_save_order_differs(files):
    fwd = files("fwd", BASIC)
    rev = files("rev", "\n".join([BASIC.splitlines()[1]] + BASIC.splitlines()[2:][::-1]) + "\n")
    _, t1, _ = run(["--rules", fwd, "--table", "10.0.0.100:80"])
    _, t2, _ = run(["--rules", rev, "--table", "10.0.0.100:80"])
    diff = sum(1 for a, b in zip(t1.splitlines(), t2.splitlines(), strict=False) if a != b)
    assert diff == 5          # docs/ipvs.md §1.6: 5 of 4093 slots differ


def test_bad_rules_line_reports_line_and_prints_no_flows(files):
    rules = files("rules", BASIC + "ipvsadm -a -t 10.0.0.100:80 -r 10.0.0.3:80 -m -w 1\n")
    rc, out, err = run(["--rules", rules], stdin="tcp 1.2.3.4:5 10.0.0.100:80\n")
    assert rc == 1 and out == ""
    assert err == f"userlb simulate: {rules}:6: Destination already exists\n"
    rules = files("rules2",
                  "-A -t 10.0.0.100:80 -s mh\n-a -t 10.0.0.100:80 -r 10.0.0.1 -w 2147483648 -m\n")
    rc, out, err = run(["--rules", rules], stdin="tcp 1.2.3.4:5 10.0.0.100:80\n")
    assert rc == 1 and out == "" and f"{rules}:2: illegal weight" in err
    rules = files("rules3",
                  "-A -t 10.0.0.100:80 -s mh\n-a -t 10.0.0.100:80 -r 10.0.0.1 -g --tun-csum\n")
    rc, out, err = run(["--rules", rules], stdin="tcp 1.2.3.4:5 10.0.0.100:80\n")
    assert rc == 1 and out == "" and ":2: Tunnel options conflict with forward method" in err


def test_bad_rules_through_the_script(files):
    rules = files("rules", "-A -t 10.0.0.100:80 -s lblc\n")
    rc, out, err = run_sub(["--rules", rules, "--flows", "-"],
                           stdin="tcp 1.2.3.4:5 10.0.0.100:80\n")
    assert rc == 1 and out == ""
    assert f"{rules}:1: scheduler 'lblc' is not supported by userlb" in err


@pytest.mark.parametrize("flow,msg", [
    ("tcp 1.2.3.4:5", "expected `PROTO"),
    ("icmp 1.2.3.4:5 10.0.0.100:80", "unknown protocol"),
    ("tcp 1.2.3.4 10.0.0.100:80", "missing port"),
    ("tcp 1.2.3.400:5 10.0.0.100:80", "bad client"),
    ("tcp 2001:db8::1 10.0.0.100:80", "bad client"),
    ("tcp [2001:db8::1]:5 10.0.0.100:80", "different families"),
    ("tcp 1.2.3.4:5 10.0.0.100:99999", "invalid port"),
])
def test_bad_flow_line(files, flow, msg):
    rules = files("rules", BASIC)
    rc, out, err = run(["--rules", rules, "--flows", "-"],
                       stdin="tcp 1.2.3.4:5 10.0.0.100:80\n\n" + flow + "\n")
    assert rc == 1 and out == ""
    assert err.startswith("userlb simulate: -:3: ") and msg in err


def test_missing_files_and_usage(files, tmp_path):
    rc, out, err = run(["--rules", str(tmp_path / "nope")])
    assert rc == 1 and "No such file" in err
    rc, out, err = run([])
    assert rc == 2
    rules = files("rules", BASIC)
    rc, out, err = run(["--rules", rules, "--table", "10.0.0.100:80", "--against", rules])
    assert rc == 2


def test_dispatch_from_userlb_main(files, capsys, monkeypatch):
    rules = files("rules", BASIC)
    flows = files("flows", "tcp 10.9.9.9:1000 10.0.0.100:80\n")
    assert userlb_main(["simulate", "--rules", rules, "--flows", flows]) == 0
    assert capsys.readouterr().out.startswith("tcp 10.9.9.9:1000 10.0.0.100:80 -> 10.0.0.")


# ------------------------------------------------------------------ --table

def test_table_errors(files):
    rules = files("rules", BASIC + "-A -u 10.0.0.100:53 -s rr\n")
    rc, out, err = run(["--rules", rules, "--table", "10.0.0.100:53", "--proto", "udp"])
    assert rc == 1 and "scheduler 'rr' has no lookup table" in err and out == ""
    rc, out, err = run(["--rules", rules, "--table", "10.0.0.100:53"])     # tcp by default
    assert rc == 1 and "no service tcp 10.0.0.100:53" in err
    rc, out, err = run(["--rules", rules, "--table", "nonsense"])
    assert rc == 1 and "bad --table" in err


def test_table_sizes_and_json(files):
    rules = files("rules", "-A -t 10.0.0.100:80 -s mh --mh-table-size 251\n"
                           "-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m\n"
                           "-A -t 10.0.0.100:81 -s sh --sh-tab-bits 4\n"
                           "-A -t 10.0.0.100:82 -s mh-backport --mh-table-size 509\n"
                           "-a -t 10.0.0.100:82 -r 10.0.0.1:80 -m -w 0\n")
    _, out, _ = run(["--rules", rules, "--table", "10.0.0.100:80"])
    assert out.splitlines() == [f"{i} 10.0.0.1:80" for i in range(251)]
    _, out, _ = run(["--rules", rules, "--table", "10.0.0.100:81"])
    assert out.splitlines() == [f"{i} -" for i in range(16)]
    _, out, _ = run(["--rules", rules, "--table", "10.0.0.100:82", "--json"])
    data = json.loads(out)
    assert data["scheduler"] == "mh-backport" and data["size"] == 509
    assert data["table"] == [None] * 509         # weight 0 is left out by mh-backport


def test_mhs_table_equals_mh_in_canonical_order(files):
    # mhs walks backends in canonical (ascending) order; mh walks newest first,
    # so mh with the backends added in descending order builds the same table
    mhs = files("mhs", "-A -t 10.0.0.100:80 -s mhs -b mh-port\n"
                       "-a -t 10.0.0.100:80 -r 10.0.0.2:80 -m\n"
                       "-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m\n"
                       "-a -t 10.0.0.100:80 -r 10.0.0.3:80 -m\n")
    mh = files("mh", "-A -t 10.0.0.100:80 -s mh -b mh-port\n"
                     "-a -t 10.0.0.100:80 -r 10.0.0.3:80 -m\n"
                     "-a -t 10.0.0.100:80 -r 10.0.0.2:80 -m\n"
                     "-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m\n")
    _, t_mhs, e1 = run(["--rules", mhs, "--table", "10.0.0.100:80"])
    _, t_mh, e2 = run(["--rules", mh, "--table", "10.0.0.100:80"])
    assert e1 == e2 == ""
    assert t_mhs == t_mh and len(t_mhs.splitlines()) == 4093
    # and the flows agree
    flows = "".join(f"tcp 172.16.{i // 250}.{i % 250}:{1024 + i} 10.0.0.100:80\n"
                    for i in range(500))
    assert run(["--rules", mhs], stdin=flows)[1] == run(["--rules", mh], stdin=flows)[1]


# ---------------------------------------------------------------- --against

def test_against_counts_match_two_separate_runs(files):
    before = files("before", BASIC)
    after = files("after",
                  BASIC.replace("ipvsadm -a -t 10.0.0.100:80 -r 10.0.0.2:80 -m -w 1\n", ""))
    flows = "".join(f"tcp 192.168.{i // 200}.{i % 200}:{2000 + i} 10.0.0.100:80\n"
                    for i in range(1000))
    flows += "udp 1.1.1.1:1 10.0.0.100:80\n"
    _, out_a, _ = run(["--rules", before], stdin=flows)
    _, out_b, _ = run(["--rules", after], stdin=flows)
    pairs = [(a.split(" -> ")[1], b.split(" -> ")[1])
             for a, b in zip(out_a.splitlines(), out_b.splitlines(), strict=False)]
    moved = sum(1 for a, b in pairs if a != b)
    _, ta, _ = run(["--rules", before, "--table", "10.0.0.100:80"])
    _, tb, _ = run(["--rules", after, "--table", "10.0.0.100:80"])
    slots_moved = sum(1 for a, b in zip(ta.splitlines(), tb.splitlines(), strict=False) if a != b)

    rc, out, err = run(["--rules", before, "--against", after, "--json", "--flows", "-"],
                       stdin=flows)
    assert (rc, err) == (0, "")
    res = json.loads(out)
    assert res["flows"] == 1001 and res["flows_moved"] == moved
    assert len(res["moved"]) == moved
    svc = res["services"][0]
    assert svc["service"] == "tcp 10.0.0.100:80" and svc["slots"] == 4093
    assert svc["slots_moved"] == slots_moved
    rows = {b["backend"]: b for b in svc["backends"]}
    gone = rows["10.0.0.2:80"]
    assert gone["slots_after"] == 0 and gone["lost"] == gone["slots_before"]
    assert gone["moved_away"] == gone["flows_before"] == \
        sum(1 for a, _ in pairs if a == "10.0.0.2:80")
    assert sum(b["lost"] for b in rows.values()) == slots_moved == \
        sum(b["gained"] for b in rows.values())
    assert sum(b["slots_before"] for b in rows.values()) == 4093
    assert sum(b["slots_after"] for b in rows.values()) == 4093
    for name, b in rows.items():
        assert b["flows_after"] == sum(1 for _, x in pairs if x == name)
        assert b["slots_before"] == sum(1 for line in ta.splitlines() if line.endswith(" " + name))

    # the text report carries the same numbers
    rc, text, err = run(["--rules", before, "--against", after, "--flows", "-"], stdin=flows)
    assert rc == 0
    assert f"  slots: 4093, moved {slots_moved} " in text
    assert f"flows (all services): 1001, moved {moved} " in text
    row = [x for x in text.splitlines() if x.strip().startswith("10.0.0.2:80")][0].split()
    assert row == ["10.0.0.2:80", str(gone["slots_before"]), "0", str(gone["lost"]), "0",
                   str(gone["flows_before"]), "0", str(gone["moved_away"])]


def test_against_without_flows_and_with_removed_service(files):
    before = files("before", BASIC + "-A -u 10.0.0.100:53 -s sh\n"
                                     "-a -u 10.0.0.100:53 -r 10.0.0.1:53 -m\n")
    after = files("after", BASIC)
    rc, out, err = run(["--rules", before, "--against", after])
    assert (rc, err) == (0, "")
    assert "service tcp 10.0.0.100:80: mh -> mh\n  slots: 4093, moved 0 (0.00%)" in out
    assert "service udp 10.0.0.100:53: sh -> (none)\n  slots: 256, moved 256 (100.00%)" in out
    assert "flows" not in out
    assert out.splitlines()[2].split() == ["backend", "slots_before", "slots_after", "lost",
                                           "gained"]


def test_module_runs_as_script_entry(files):
    rules = files("rules", BASIC)
    p = subprocess.run([sys.executable, "-m", "userlb.cli.main", "simulate", "--rules", rules,
                        "--table", "10.0.0.100:80"], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 4093


# ------------------------------------------------------- timed input (mhs)

MHS3 = """\
-A -t 10.0.0.100:80 -s mhs
-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m
-a -t 10.0.0.100:80 -r 10.0.0.2:80 -m
-a -t 10.0.0.100:80 -r 10.0.0.3:80 -m
-A -u 10.0.0.100:80 -s mhs
-a -u 10.0.0.100:80 -r 10.0.0.1:80 -m
-a -u 10.0.0.100:80 -r 10.0.0.2:80 -m
-a -u 10.0.0.100:80 -r 10.0.0.3:80 -m
"""
A, B, C = "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"


def classify(files, before, after, n=250):
    """client -> (backend before, backend after) from two untimed runs."""
    keys = "".join(f"tcp 172.16.0.{i}:1000 10.0.0.100:80\n" for i in range(n))
    _, a, _ = run(["--rules", files("cls-a", before)], stdin=keys)
    _, b, _ = run(["--rules", files("cls-b", after)], stdin=keys)
    out = {}
    for x, y in zip(a.splitlines(), b.splitlines(), strict=False):
        out[x.split()[1].split(":")[0]] = (x.split(" -> ")[1], y.split(" -> ")[1])
    return out


def keys_moving(cls, frm, to):
    return [k for k, v in cls.items() if v == (frm, to)]


def timed(files, rules, text):
    rc, out, err = run(["--rules", files("timed-rules", rules)], stdin=text)
    assert (rc, err) == (0, "")
    return [(x.split(" -> ")[0], x.split(" -> ")[1]) for x in out.splitlines()]


def test_timed_s1_steady_no_state(files):
    cls = classify(files, MHS3, MHS3)
    k = keys_moving(cls, B, B)[0]
    res = timed(files, MHS3, "".join(f"@{i} tcp {k}:1000 10.0.0.100:80 {fl}\n"
                                     for i, fl in enumerate(["SYN", "ACK", "FIN", "RST"]))
                + f"@9 udp {k}:1000 10.0.0.100:80\n")
    assert [r[1] for r in res] == [f"{B} noentry"] * 5
    assert res[0][0] == f"@0 tcp {k}:1000 10.0.0.100:80 SYN"
    assert res[4][0] == f"@9 udp {k}:1000 10.0.0.100:80"


def test_timed_s2_s3_remove_then_readd(files):
    after = MHS3.replace("-a -t 10.0.0.100:80 -r 10.0.0.2:80 -m\n", "").replace(
        "-a -u 10.0.0.100:80 -r 10.0.0.2:80 -m\n", "")
    cls = classify(files, MHS3, after)
    k1, k2, k3, k4, k5 = keys_moving(cls, B, C)[:5]
    ka = keys_moving(cls, A, A)[0]
    text = (f"@0 tcp {ka}:1 10.0.0.100:80 SYN\n"          # both services forward first
            f"@0 udp {ka}:1 10.0.0.100:80\n"
            "@1000 -d -t 10.0.0.100:80 -r 10.0.0.2:80\n"
            "@1000 -d -u 10.0.0.100:80 -r 10.0.0.2:80\n"
            f"@1001 tcp {k1}:1000 10.0.0.100:80 ACK\n"
            f"@1002 tcp {k2}:1000 10.0.0.100:80 SYN\n"
            f"@1003 udp {k3}:1000 10.0.0.100:80\n"
            f"@1004 tcp {ka}:1000 10.0.0.100:80 SYN\n"
            f"@1901 tcp {k4}:1000 10.0.0.100:80 SYN\n")
    res = timed(files, MHS3, text)
    assert [r[1] for r in res] == [
        f"{A} noentry", f"{A} noentry",
        f"{B} entry", f"{C} entry", f"{C} noentry", f"{A} noentry", f"{C} noentry"]
    # S3: re-adding B at 1010 makes every slot stable at once; entries stay
    text = text.replace(f"@1901 tcp {k4}:1000 10.0.0.100:80 SYN\n", "") + (
        "@1010 -a -t 10.0.0.100:80 -r 10.0.0.2:80 -m\n"
        f"@1011 tcp {k5}:1000 10.0.0.100:80 SYN\n"
        f"@1012 tcp {k1}:1000 10.0.0.100:80 DATA\n"
        f"@1013 tcp {k2}:1000 10.0.0.100:80 ACK\n")
    res = timed(files, MHS3, text)
    assert [r[1] for r in res[-3:]] == [f"{B} noentry", f"{B} entry", f"{C} entry"]
    assert res[-2][0] == f"@1012 tcp {k1}:1000 10.0.0.100:80 PSH,ACK"


def test_timed_s6_all_weights_zero(files):
    rules = ("-A -t 10.0.0.100:80 -s mhs\n-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m\n"
             "-a -t 10.0.0.100:80 -r 10.0.0.2:80 -m\n")
    cls = classify(files, rules, rules)
    k = keys_moving(cls, A, A)[0]
    res = timed(files, rules, f"@0 tcp {k}:5 10.0.0.100:80\n"
                              "@1000 -e -t 10.0.0.100:80 -r 10.0.0.1:80 -m -w 0\n"
                              "@1000 -e -t 10.0.0.100:80 -r 10.0.0.2:80 -m -w 0\n"
                              f"@1001 tcp {k}:1000 10.0.0.100:80 SYN\n"
                              f"@1001 tcp {k}:1000 10.0.0.100:80 ACK\n")
    assert [r[1] for r in res] == [f"{A} noentry", "- noentry", f"{A} entry"]
    assert res[0][0].endswith(" SYN")                 # a TCP line without flags is a SYN


def test_timed_order_rules_before_flows_and_output_in_line_order(files):
    rules = "-A -t 10.0.0.100:80 -s rr\n"
    text = ("@5 tcp 1.1.1.1:1 10.0.0.100:80 SYN\n"
            "@5 -a -t 10.0.0.100:80 -r 10.0.0.1:80 -m\n"    # same time: applies first
            "@1 tcp 1.1.1.2:1 10.0.0.100:80 SYN\n"          # earlier: no backend yet
            "tcp 1.1.1.3:1 10.0.0.100:80 SYN\n")            # inherits @1
    res = timed(files, rules, text)
    assert res == [("@5 tcp 1.1.1.1:1 10.0.0.100:80 SYN", "10.0.0.1:80 entry"),
                   ("@1 tcp 1.1.1.2:1 10.0.0.100:80 SYN", "- noentry"),
                   ("@1 tcp 1.1.1.3:1 10.0.0.100:80 SYN", "- noentry")]


def test_timed_classic_scheduler_entries_and_json(files):
    rules = "-A -t [2001:db8::100]:80 -s rr\n-a -t [2001:db8::100]:80 -r [2001:db8::1]:8080 -m\n"
    text = ("@0.5 tcp [2001:db8::9]:4000 [2001:db8::100]:80 SYN\n"
            "@1 tcp [2001:db8::9]:4000 [2001:db8::100]:80 ACK\n"
            "@2 tcp [2001:db8::9]:4001 [2001:db8::100]:80 ACK\n")   # no entry: RST
    res = timed(files, rules, text)
    assert res == [("@0.5 tcp [2001:db8::9]:4000 [2001:db8::100]:80 SYN",
                    "[2001:db8::1]:8080 entry"),
                   ("@1 tcp [2001:db8::9]:4000 [2001:db8::100]:80 ACK", "[2001:db8::1]:8080 entry"),
                   ("@2 tcp [2001:db8::9]:4001 [2001:db8::100]:80 ACK", "- noentry")]
    rc, out, err = run(["--rules", files("r", rules), "--json"], stdin=text)
    data = json.loads(out)
    assert data[0] == {"time": 0.5, "proto": "tcp", "client": "[2001:db8::9]:4000",
                       "vip": "[2001:db8::100]:80", "flags": "SYN",
                       "dest": "[2001:db8::1]:8080", "entry": True}


@pytest.mark.parametrize("text,msg", [
    ("@x tcp 1.1.1.1:1 10.0.0.100:80\n", "bad time"),
    ("@-1 tcp 1.1.1.1:1 10.0.0.100:80\n", "bad time"),
    ("@5\n", "a time without"),
    ("tcp 1.1.1.1:1 10.0.0.100:80 SYN,BOGUS\n", "unknown TCP flag 'BOGUS'"),
    ("udp 1.1.1.1:1 10.0.0.100:80 SYN\n", "only for tcp"),
    ("@1 -a -t 10.0.0.100:80 -r 10.0.0.1 -m -w 2147483648\n", "illegal weight"),
    ("@1 -a -t 10.0.0.100:81 -r 10.0.0.1 -m\n", "Service not defined"),
])
def test_timed_errors(files, text, msg):
    rules = files("rules", "-A -t 10.0.0.100:80 -s mhs\n")
    rc, out, err = run(["--rules", rules], stdin="@0 tcp 2.2.2.2:2 10.0.0.100:80\n" + text)
    assert rc == 1 and out == ""
    assert err.startswith("userlb simulate: -:2: ") and msg in err


def test_build_packet_is_valid():
    from userlb.dataplane.csum import ones_sum, pseudo_sum
    from userlb.dataplane.packet import parse
    for line in ("tcp 1.2.3.4:5 10.0.0.100:80 SYN,ACK", "udp 1.2.3.4:5 10.0.0.100:53",
                 "tcp [2001:db8::9]:4000 [2001:db8::100]:80 DATA", "udp [::1]:1 [::2]:2"):
        f = simulate.parse_flow_line(line)
        raw = simulate.build_packet(f)
        r = parse(bytearray(raw), 0, len(raw))
        assert isinstance(r, tuple), (line, r)
        af = 4 if raw[0] >> 4 == 4 else 6
        off = 20 if af == 4 else 40
        if af == 4:
            assert ones_sum(raw, 0, 20) == 0xFFFF
        l4 = raw[off:]
        assert ones_sum(l4, initial=pseudo_sum(af, f.caddr, f.vaddr, f.proto, len(l4))) == 0xFFFF


def _classify3(files, r1, r2, r3, n=250):
    keys = "".join(f"tcp 172.16.0.{i}:1000 10.0.0.100:80\n" for i in range(n))
    outs = []
    for i, r in enumerate((r1, r2, r3)):
        _, o, _ = run(["--rules", files(f"c3-{i}", r)], stdin=keys)
        outs.append([x.split(" -> ")[1] for x in o.splitlines()])
    return {f"172.16.0.{i}": (outs[0][i], outs[1][i], outs[2][i]) for i in range(n)}


MHS_ABC = ("-A -t 10.0.0.100:80 -s mhs\n-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m\n"
           "-a -t 10.0.0.100:80 -r 10.0.0.2:80 -m\n-a -t 10.0.0.100:80 -r 10.0.0.3:80 -m\n")
MHS_AC = MHS_ABC.replace("-a -t 10.0.0.100:80 -r 10.0.0.2:80 -m\n", "")
MHS_ACD = MHS_AC + "-a -t 10.0.0.100:80 -r 10.0.0.4:80 -m\n"
D = "10.0.0.4:80"


def test_timed_s4_no_timer_reset(files):
    cls = _classify3(files, MHS_ABC, MHS_AC, MHS_ACD)
    ks = [k for k, v in cls.items() if v == (B, C, D)]
    ka = [k for k, v in cls.items() if v == (A, A, A)][0]
    assert len(ks) >= 3
    res = timed(files, MHS_ABC, f"@0 tcp {ka}:1 10.0.0.100:80\n"
                                "@1000 -d -t 10.0.0.100:80 -r 10.0.0.2:80\n"
                                "@1500 -a -t 10.0.0.100:80 -r 10.0.0.4:80 -m\n"
                                f"@1899 tcp {ks[0]}:1000 10.0.0.100:80 SYN\n"
                                f"@1899 tcp {ks[1]}:1000 10.0.0.100:80 ACK\n"
                                f"@1900 tcp {ks[2]}:1000 10.0.0.100:80 SYN\n")
    assert [r[1] for r in res[1:]] == [f"{D} entry", f"{B} entry", f"{D} noentry"]


def test_timed_s5_merge_at_change_new_grace_period(files):
    cls = _classify3(files, MHS_ABC, MHS_AC, MHS_ACD)
    ks = [k for k, v in cls.items() if v == (B, C, D)]
    ka = [k for k, v in cls.items() if v == (A, A, A)][0]
    res = timed(files, MHS_ABC, f"@0 tcp {ka}:1 10.0.0.100:80\n"
                                "@1000 -d -t 10.0.0.100:80 -r 10.0.0.2:80\n"
                                "@2000 -a -t 10.0.0.100:80 -r 10.0.0.4:80 -m\n"
                                f"@2000.5 tcp {ks[0]}:1000 10.0.0.100:80 SYN\n"
                                f"@2000.5 tcp {ks[1]}:1000 10.0.0.100:80 ACK\n")
    assert [r[1] for r in res[1:]] == [f"{D} entry", f"{C} entry"]
    assert res[1][0].startswith("@2000.5 tcp ")


def test_s8_add_order_and_flap_do_not_matter_for_mhs(files):
    lines = MHS_ACD.splitlines()
    orders = [
        "\n".join(lines) + "\n",
        "\n".join([lines[0]] + lines[1:][::-1]) + "\n",
        "\n".join([lines[0], lines[2], lines[3], lines[1],
                   "-d -t 10.0.0.100:80 -r 10.0.0.3:80",
                   "-a -t 10.0.0.100:80 -r 10.0.0.3:80 -m"]) + "\n",
    ]
    keys = "".join(f"tcp 10.{i // 250}.{i % 250}.7:{1024 + i} 10.0.0.100:80\n"
                   for i in range(10000))
    outs = [run(["--rules", files(f"o{i}", r)], stdin=keys)[1] for i, r in enumerate(orders)]
    assert outs[0] == outs[1] == outs[2]
    assert len(outs[0].splitlines()) == 10000
    assert {x.split(" -> ")[1] for x in outs[0].splitlines()} == {A, C, "10.0.0.4:80"}


def test_s7_weight_zero_equals_removal(files):
    """docs/mhs-spec.md S7 through simulate: after B is set to weight 0, the table that
    decides a SYN (the candidate table) equals the one built from {A, C}; the
    same holds once the service forwards and T has passed."""
    abc = ("-A -t 10.0.0.100:80 -s mhs\n"
           "-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m\n"
           "-a -t 10.0.0.100:80 -r 10.0.0.2:80 -m\n"
           "-a -t 10.0.0.100:80 -r 10.0.0.3:80 -m\n")
    ac = abc.replace("-a -t 10.0.0.100:80 -r 10.0.0.2:80 -m\n", "")
    zero = files("zero", abc + "-e -t 10.0.0.100:80 -r 10.0.0.2:80 -m -w 0\n")
    removed = files("removed", ac)
    _, t_zero, e1 = run(["--rules", zero, "--table", "10.0.0.100:80"])
    _, t_ac, e2 = run(["--rules", removed, "--table", "10.0.0.100:80"])
    assert e1 == e2 == ""
    assert t_zero == t_ac and len(t_ac.splitlines()) == 4093
    assert B not in t_zero
    # with time: the service forwards first, B goes to weight 0 at t=1000;
    # after T (900 s) every flow goes where the {A, C} table sends it
    keys = [f"tcp 10.{i // 250}.{i % 250}.9:{2000 + i} 10.0.0.100:80" for i in range(300)]
    text = ("@1 tcp 192.0.2.1:1000 10.0.0.100:80 syn\n"
            "@1000 -e -t 10.0.0.100:80 -r 10.0.0.2:80 -m -w 0\n"
            + "".join(f"@1901 {k} syn\n" for k in keys))
    rc, out, err = run(["--rules", files("abc", abc)], stdin=text)
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 1 + len(keys)
    got = [line.split(" -> ")[1].split()[0] for line in lines[1:]]
    assert all(line.endswith(" noentry") for line in lines[1:])   # slots merged: stateless
    want = [line.split(" -> ")[1] for line in
            run(["--rules", removed], stdin="".join(k + "\n" for k in keys))[1].splitlines()]
    assert got == want
    assert B not in got


def test_table_summary_and_json_slots(files):
    rules = files("rules", "-A -t 10.0.0.100:80 -s mh\n"
                           "-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m -w 1\n"
                           "-a -t 10.0.0.100:80 -r 10.0.0.2:80 -m -w 3\n"
                           "-a -t 10.0.0.100:80 -r 10.0.0.3:80 -m -w 0\n")
    rc, table, _ = run(["--rules", rules, "--table", "10.0.0.100:80"])
    counts = {}
    for line in table.splitlines():
        counts[line.split()[1]] = counts.get(line.split()[1], 0) + 1
    rc, out, err = run(["--rules", rules, "--table", "10.0.0.100:80", "--summary"])
    assert (rc, err) == (0, "")
    got = {line.split()[0]: (int(line.split()[2]), int(line.split()[4]))
           for line in out.splitlines()}
    assert got == {"10.0.0.1:80": (1, counts["10.0.0.1:80"]),
                   "10.0.0.2:80": (3, counts["10.0.0.2:80"]),
                   "10.0.0.3:80": (0, 0)}
    assert sum(n for _, n in got.values()) == 4093
    rc, out, _ = run(["--rules", rules, "--table", "10.0.0.100:80", "--json"])
    assert json.loads(out)["slots"] == {k: list(v) for k, v in got.items()}


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_flows_from_a_terminal_say_what_is_expected(files):
    rules = files("rules", BASIC)
    out, err = io.StringIO(), io.StringIO()
    rc = simulate.main(["--rules", rules], stdin=_Terminal("tcp 10.9.9.9:1000 10.0.0.100:80\n"),
                       stdout=out, stderr=err)
    assert rc == 0 and "reading flows from the terminal" in err.getvalue()
    assert "Ctrl-D" in err.getvalue() and out.getvalue().startswith("tcp 10.9.9.9:1000")
    # from a pipe or file: nothing on stderr
    assert run(["--rules", rules], stdin="tcp 10.9.9.9:1000 10.0.0.100:80\n")[2] == ""


def test_timed_rules_in_the_rules_file_mean_what_they_mean_in_the_flows_file(files):
    start = ("-A -t 10.0.0.100:80 -s mh\n"
             "-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m\n"
             "-a -t 10.0.0.100:80 -r 10.0.0.2:80 -m\n")
    change = "@10 -d -t 10.0.0.100:80 -r 10.0.0.1:80\n-a -t 10.0.0.100:80 -r 10.0.0.3:80 -m\n"
    flows = "".join(f"@{t} tcp 10.9.{i}.{t + 1}:{1000 + i} 10.0.0.100:80\n"
                    for t in (0, 20) for i in range(20))
    rc_a, a, err_a = run(["--rules", files("timed", start + change)],
                         stdin=flows)
    rc_b, b, err_b = run(["--rules", files("plain", start)], stdin=change + flows)
    assert (rc_a, err_a) == (0, "") and (rc_b, err_b) == (0, "")
    assert a == b
    at20 = [line for line in a.splitlines() if line.startswith("@20 ")]
    assert len(at20) == 20 and not any("-> 10.0.0.1:80" in line for line in at20)
    assert any("-> 10.0.0.3:80" in line for line in at20)


def test_timed_rules_file_refusals_name_the_line(files):
    rules = files("r", "-A -t 10.0.0.100:80 -s rr\n@5 tcp 1.2.3.4:5 10.0.0.100:80\n")
    rc, out, err = run(["--rules", rules], stdin="tcp 1.2.3.4:5 10.0.0.100:80\n")
    assert rc == 1 and "flows belong in --flows" in err and out == ""
    rules = files("r2", "-A -t 10.0.0.100:80 -s mh\n-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m\n"
                        "@5 -d -t 10.0.0.100:80 -r 10.0.0.1:80\n")
    rc, out, err = run(["--rules", rules, "--table", "10.0.0.100:80"])
    assert rc == 1 and f"{rules}:3:" in err and "only used with flows" in err
    rules = files("r3", "-A -t 10.0.0.100:80 -s rr\n@x -d -t 10.0.0.100:80\n")
    rc, out, err = run(["--rules", rules], stdin="")
    assert rc == 1 and f"{rules}:2:" in err and "bad time" in err
