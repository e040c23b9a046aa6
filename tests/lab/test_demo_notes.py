"""The demo's notes, from a running configuration as `userlb adm -S -n`
prints it (no namespaces needed): which real server has weight 0 or is not
in a service, and which mh services `-S` cannot describe exactly."""
from userlb.lab import demo

RUNNING = """\
-A -t 10.99.0.1:80 -s mh -b mh-fallback,mh-port
-a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 0
-a -t 10.99.0.1:80 -r 10.20.0.12:80 -m -w 1
-A -t [fd00:99::1]:80 -s mh -b mh-fallback,mh-port
-a -t [fd00:99::1]:80 -r [fd00:20::b]:80 -m -w 1
-a -t [fd00:99::1]:80 -r [fd00:20::c]:80 -m -w 2
-A -u 10.99.0.1:7 -s sh -b sh-fallback,sh-port
-a -u 10.99.0.1:7 -r 10.20.0.11:7 -m -w 0
-a -u 10.99.0.1:7 -r 10.20.0.12:7 -m -w 1
-A -u [fd00:99::1]:7 -s sh -b sh-fallback,sh-port
-a -u [fd00:99::1]:7 -r [fd00:20::c]:7 -m -w 1
"""
NAMES = {"10.20.0.11": "s1", "fd00:20::b": "s1", "10.20.0.12": "s2", "fd00:20::c": "s2"}
GROUPS = [("HTTP v4", "tcp", "10.99.0.1:80"), ("HTTP v6", "tcp", "[fd00:99::1]:80"),
          ("UDP v4", "udp", "10.99.0.1:7"), ("UDP v6", "udp", "[fd00:99::1]:7")]


def test_dest_weights_reads_the_saved_rules():
    w = demo.dest_weights(RUNNING)
    assert w[("tcp", "10.99.0.1:80")] == {"10.20.0.11": 0, "10.20.0.12": 1}
    assert w[("tcp", "[fd00:99::1]:80")] == {"fd00:20::b": 1, "fd00:20::c": 2}
    assert w[("udp", "[fd00:99::1]:7")] == {"fd00:20::c": 1}


def test_quiesced_mh_names_only_mh_services_with_a_weight_0_server():
    # the sh service with a weight-0 server is exact from -S (sh has no last weight)
    assert demo.quiesced_mh(RUNNING) == {("tcp", "10.99.0.1:80"): {"10.20.0.11"}}


def test_zero_notes_say_why_a_server_is_predicted_nothing():
    counts = {"s1": [(0, 0), (3, 3), (0, 0), (0, 0)],
              "s2": [(9, 9), (0, 0), (4, 4), (5, 5)]}
    notes = [" ".join(n.split()) for n in
             demo.zero_notes(NAMES, demo.dest_weights(RUNNING), GROUPS, counts)]
    assert notes == [
        "s1: 0 predicted for HTTP v4, UDP v4: weight 0 in the running configuration: a real "
        "server with weight 0 is quiesced, it gets no new connections (those it has continue)",
        "s1: 0 predicted for UDP v6: not a real server of that service in the running "
        "configuration",
        "s2: 0 predicted for HTTP v6: weight 2, but no flow of this sample hashed to it"]
