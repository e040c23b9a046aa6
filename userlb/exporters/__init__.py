"""Exporters: what programs built for kernel IPVS read, from userlb's counters.

* snapshot.py  -- one copy of the configuration's counters, taken on the event
                  loop once a second (no per-packet work; readers in other
                  threads see only the copy).
* procfs.py    -- /proc/net/ip_vs, /proc/net/ip_vs_stats in the kernel's
                  formats, for node_exporter's IPVS collector.
* prometheus.py -- a `/metrics` endpoint (prometheus_client) with
                  node_exporter's node_ipvs_* names plus userlb_* ones.
"""
