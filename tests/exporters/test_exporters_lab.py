"""`userlb run --procfs DIR --metrics ADDR:PORT` in the namespace lab, under
traffic, read by the real node_exporter (Debian `prometheus-node-exporter`,
`--path.procfs=DIR --collector.disable-defaults --collector.ipvs`) and by a
plain HTTP client parsing userlb's own endpoint with prometheus_client.parser.
Both must report what `ipvsadm -L -n --stats` (and `-L -n`) print."""
import os
import shutil
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers.netns import needs_root
from userlb.testing import LbLab

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]

NODE_EXPORTER = shutil.which("prometheus-node-exporter")
METRICS = "127.0.0.1:9780"
NODE = "127.0.0.1:9781"


def _scrape(lab, addr):
    p = lab.run_in(lab.director, ["curl", "-sf", f"http://{addr}/metrics"])
    return {f.name: f for f in text_string_to_metric_families(p.stdout)}


def _backends(fams, name):
    return {(s.labels["local_address"], s.labels["local_port"], s.labels["remote_address"],
             s.labels["remote_port"], s.labels["proto"]): s.value
            for s in fams[name].samples}


def _listing(lab):
    """-> ({backend key: (conns, inpkts, outpkts, inbytes, outbytes)},
           {backend key: (weight, active, inactive)}, totals over services)"""
    stats, state = {}, {}
    svc = None
    for line in lab.director.listing("--stats").splitlines()[3:]:
        w = line.split()
        if w[0] in ("TCP", "UDP"):
            svc = (w[0],) + tuple(w[1].replace("[", "").replace("]", "").rsplit(":", 1))
        else:
            addr, port = w[1].replace("[", "").replace("]", "").rsplit(":", 1)
            stats[(svc[1], svc[2], addr, port, svc[0])] = tuple(int(x) for x in w[2:7])
    for line in lab.director.listing().splitlines()[3:]:
        w = line.split()
        if w[0] in ("TCP", "UDP"):
            svc = (w[0],) + tuple(w[1].replace("[", "").replace("]", "").rsplit(":", 1))
        else:
            addr, port = w[1].replace("[", "").replace("]", "").rsplit(":", 1)
            state[(svc[1], svc[2], addr, port, svc[0])] = tuple(int(x) for x in w[3:6])
    return stats, state


@pytest.mark.skipif(NODE_EXPORTER is None, reason="needs prometheus-node-exporter "
                    "(make sysdeps installs it)")
def test_node_exporter_and_metrics_match_the_listing():
    with LbLab(servers=2, scheduler="rr") as lab:
        inner = lab._lab_obj
        procfs = str(inner.dir / "proc")
        lab.director.stop()
        inner.start_director(extra=["--procfs", procfs, "--metrics", METRICS])
        assert f"metrics http://{METRICS}/metrics" in lab.director.log()
        inner.start("node_exporter", lab.director.namespace,
                    [NODE_EXPORTER, f"--path.procfs={procfs}", "--collector.disable-defaults",
                     "--collector.ipvs", f"--web.listen-address={NODE}"])
        for _ in range(6):
            r = lab.client.http_get(lab.vip4)
            assert r.status == 200, r
        r6 = lab.client.http_get(lab.vip6)
        assert r6.status == 200, r6
        time.sleep(1.5)            # one exporter tick after the traffic
        deadline = time.monotonic() + 10
        while True:
            try:
                node = _scrape(lab, NODE)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        ours = _scrape(lab, METRICS)
        stats, state = _listing(lab)

        # the totals: ip_vs_stats (node_exporter) == userlb's endpoint, and
        # the connections are those the listing counts per service
        for name in ("node_ipvs_connections", "node_ipvs_incoming_packets",
                     "node_ipvs_outgoing_packets", "node_ipvs_incoming_bytes",
                     "node_ipvs_outgoing_bytes"):
            assert node[name].samples[0].value == ours[name].samples[0].value, name
        assert node["node_ipvs_connections"].samples[0].value == \
            sum(v[0] for v in stats.values()) == 7
        assert node["node_ipvs_incoming_packets"].samples[0].value == \
            sum(v[1] for v in stats.values())
        assert node["node_ipvs_incoming_bytes"].samples[0].value == \
            sum(v[3] for v in stats.values())

        # per backend: weight, active and inactive connections, the same in
        # node_exporter (from DIR/net/ip_vs), userlb's endpoint and -L -n
        for name, col in (("node_ipvs_backend_weight", 0),
                          ("node_ipvs_backend_connections_active", 1),
                          ("node_ipvs_backend_connections_inactive", 2)):
            want = {k: v[col] for k, v in state.items()}
            assert _backends(node, name) == want, name
            assert _backends(ours, name) == want, name
        assert len(state) == 2 * 2 * 3                    # 2 VIPs x 3 services x 2 servers
        # userlb's own per-backend counters: those of --stats
        conns = _backends(ours, "userlb_backend_connections")
        assert conns == {k: v[0] for k, v in stats.items()}
        assert ours["userlb_tun_rx"].samples[0].value > 0
        assert os.path.exists(os.path.join(procfs, "net", "ip_vs"))
        lab.director.stop()
        assert not os.path.exists(os.path.join(procfs, "net", "ip_vs"))   # removed on exit
