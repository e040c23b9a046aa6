"""docker/: the Dockerfile and the compose lab, checked statically (no Docker
engine runs here): services, networks and addresses, the director's
capability and device, and that every command exists in the CLI with options
it accepts.  The compose file is read with a small parser for the YAML subset
it uses (block mappings and lists, plain and double-quoted scalars, `[]`), so the
test needs no YAML library; a construct outside that subset fails the test."""
import importlib
import ipaddress
import pathlib
import shlex

import pytest

from userlb.cli import main as cli_main
from userlb.cli import run as cli_run
from userlb.control.config import Config
from userlb.model import format_addr

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"


# ------------------------------------------------------------ YAML subset

def _scalar(text):
    t = text.strip()
    if t.startswith('"'):
        assert t.endswith('"') and len(t) >= 2, f"unterminated string: {t}"
        return t[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if t == "[]":
        return []
    assert not t.startswith(("'", "{", "[", "&", "*", "!", "|", ">")), f"unsupported YAML: {t}"
    return t


def _lines(text):
    out = []
    for raw in text.splitlines():
        s = raw.rstrip()
        if not s.strip() or s.lstrip().startswith("#"):
            continue
        out.append((len(s) - len(s.lstrip(" ")), s.strip()))
    return out


def _split_key(s):
    key, sep, rest = s.partition(":")
    assert sep and (not rest or rest.startswith(" ")), f"not a mapping entry: {s}"
    assert key.strip() != "<<", "merge keys are outside the supported subset"
    return key.strip(), rest.strip()


def _parse(lines, i, indent):
    """Parse the block starting at lines[i] (indentation == indent)."""
    if lines[i][1].startswith("- ") or lines[i][1] == "-":
        out = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("-"):
            item = lines[i][1][1:].strip()
            if ":" in item and not item.startswith('"') and _looks_like_key(item):
                # "- key: value" starts a mapping indented by 2
                sub = [(indent + 2, item)]
                j = i + 1
                while j < len(lines) and lines[j][0] > indent:
                    sub.append(lines[j])
                    j += 1
                out.append(_parse(sub, 0, indent + 2)[0])
                i = j
            else:
                out.append(_scalar(item))
                i += 1
        return out, i
    out = {}
    while i < len(lines) and lines[i][0] == indent:
        key, rest = _split_key(lines[i][1])
        i += 1
        if rest:
            out[key] = _scalar(rest)
        elif i < len(lines) and lines[i][0] > indent:
            out[key], i = _parse(lines, i, lines[i][0])
        else:
            out[key] = None
    return out, i


def _looks_like_key(item):
    key = item.split(":", 1)[0]
    return key and " " not in key and (item.endswith(":") or ": " in item)


def load_yaml(text):
    lines = _lines(text)
    doc, i = _parse(lines, 0, 0)
    assert i == len(lines), f"unparsed from line: {lines[i]}"
    return doc


def test_yaml_subset_parser_reads_what_it_claims():
    doc = load_yaml('a: 1\nb:\n  - x\n  - "y z"\nc:\n  d:\n    - e: 1\n      f: 2\n    - g: 3\n')
    assert doc == {"a": "1", "b": ["x", "y z"], "c": {"d": [{"e": "1", "f": "2"}, {"g": "3"}]}}
    with pytest.raises(AssertionError):
        load_yaml("a: &anchor 1\n")


# ------------------------------------------------------------ the files

@pytest.fixture(scope="module")
def compose():
    return load_yaml((DOCKER / "compose.yaml").read_text())


def test_dockerfile_installs_userlb_and_runs_the_cli():
    text = (DOCKER / "Dockerfile").read_text()
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    assert lines[0].startswith("FROM python:3.1")
    assert any("iproute2" in l for l in lines)
    assert "COPY userlb ./userlb" in lines and "COPY pyproject.toml README.md ./" in lines
    assert any(l.startswith("RUN pip install") for l in lines)
    assert 'ENTRYPOINT ["userlb"]' in lines
    for src in ("userlb", "pyproject.toml", "README.md"):
        assert (ROOT / src).exists()


def test_services_and_networks(compose):
    svcs = compose["services"]
    assert set(svcs) == {"director", "client", "s1", "s2", "s3"}
    assert set(compose["networks"]) == {"clients", "servers"}
    for name, net in compose["networks"].items():
        assert net["enable_ipv6"] == "true"
        subnets = [ipaddress.ip_network(c["subnet"]) for c in net["ipam"]["config"]]
        assert sorted(n.version for n in subnets) == [4, 6]
    assert set(svcs["director"]["networks"]) == {"clients", "servers"}
    assert set(svcs["client"]["networks"]) == {"clients"}
    for s in ("s1", "s2", "s3"):
        assert set(svcs[s]["networks"]) == {"servers"}
    # every fixed address lies in its network's subnets
    nets = {n: [ipaddress.ip_network(c["subnet"]) for c in v["ipam"]["config"]]
            for n, v in compose["networks"].items()}
    for svc in svcs.values():
        for net, addrs in svc["networks"].items():
            for k in ("ipv4_address", "ipv6_address"):
                a = ipaddress.ip_address(addrs[k])
                assert any(a in n for n in nets[net])
    for svc in svcs.values():
        assert svc["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}


def test_director_has_net_admin_and_the_tun_device(compose):
    d = compose["services"]["director"]
    assert "NET_ADMIN" in d["cap_add"]
    assert any(dev.split(":")[0] == "/dev/net/tun" for dev in d["devices"])
    assert d["sysctls"]["net.ipv4.ip_forward"] == "1"
    assert d["sysctls"]["net.ipv6.conf.all.forwarding"] == "1"


def _director_args(compose):
    cmd = compose["services"]["director"]["command"]
    assert cmd[0] in cli_main.COMMANDS and cmd[0] == "run"   # the image's entrypoint is `userlb`
    return cli_run.build_parser().parse_args(cmd[1:])


def test_director_command_is_a_valid_userlb_run(compose):
    args = _director_args(compose)
    assert args.tun and args.config == "/etc/userlb/rules.conf"
    vols = compose["services"]["director"]["volumes"]
    src = [v.split(":")[0] for v in vols if v.split(":")[1] == args.config]
    assert src == ["./lab-rules.conf"] and (DOCKER / "lab-rules.conf").exists()
    servers = ipaddress.ip_network(compose["networks"]["servers"]["ipam"]["config"][0]["subnet"])
    assert str(servers) in args.reply_from


def test_rules_file_parses_and_points_at_the_compose_servers(compose):
    cfg = Config()
    cfg.load_rules((DOCKER / "lab-rules.conf").read_text())
    svcs = compose["services"]
    server_addrs = {ipaddress.ip_address(svcs[s]["networks"]["servers"][k])
                    for s in ("s1", "s2", "s3") for k in ("ipv4_address", "ipv6_address")}
    rips = {ipaddress.ip_address(format_addr(d.addr)) for s in cfg.services.values() for d in s.dests}
    assert rips == server_addrs
    vips = {format_addr(s.addr) for s in cfg.services.values()}
    client_cmd = svcs["client"]["command"][-1]
    for vip in vips:
        assert vip in client_cmd        # the client routes every VIP to the director
    director_addrs = {svcs["director"]["networks"]["clients"][k] for k in ("ipv4_address", "ipv6_address")}
    for a in director_addrs:
        assert f"via {a}" in client_cmd


def test_server_and_client_commands_exist(compose):
    svcs = compose["services"]
    director_srv = {svcs["director"]["networks"]["servers"][k] for k in ("ipv4_address", "ipv6_address")}
    for s in ("s1", "s2", "s3"):
        cmd = svcs[s]["command"]
        assert cmd[:2] == ["sh", "-c"] and svcs[s]["entrypoint"] == []
        script = cmd[2]
        for a in director_srv:
            assert f"default via {a}" in script     # replies go back through the director
        words = shlex.split(script.split("exec ", 1)[1])
        assert words[:3] == ["python", "-m", "userlb.lab.servers"]
        importlib.import_module(words[2])
        assert words[3:] == ["--name", s]
        assert "NET_ADMIN" in svcs[s]["cap_add"]
    assert "NET_ADMIN" in svcs["client"]["cap_add"]


def test_documented_commands_use_existing_cli_commands():
    text = (DOCKER / "compose.yaml").read_text()
    for line in text.splitlines():
        if "exec director userlb " in line:
            sub = line.split("exec director userlb ", 1)[1].split()[0]
            assert sub in cli_main.COMMANDS
