#!/bin/sh
# The roles of the userlb containerlab nodes (userlb.clab.yml):
#
#   node.sh director      eth1 to the client, eth2-eth4 to the real servers in a
#                         bridge br0; then `userlb run` with /lab/lab.rules
#   node.sh server NAME   eth1 to the director; then the lab's real servers
#                         (python3 -m userlb.lab.servers: HTTP 80, TCP echo 7,
#                         TCP hash 9, UDP echo 7)
#   node.sh client        eth1 to the director, routes to the VIPs; then waits
#                         (traffic comes with `docker exec`, see README.md)
#
# containerlab attaches the data links after the container has started: every
# role first waits for its interfaces.  The addresses are the namespace lab's
# (userlb/lab/base.py); tests/testing/test_topologies.py checks that they agree.
# ULB_RULES overrides the rules file's path (default /lab/lab.rules, bound in).
set -eu

say() { echo "node.sh: $*" >&2; }

wait_link() {
    n=0
    until ip link show "$1" >/dev/null 2>&1; do
        n=$((n + 1))
        if [ "$n" -gt 600 ]; then say "no $1 after 60 s (link missing in the topology?)"; exit 1; fi
        sleep 0.1
    done
    ip link set "$1" up
}

case "${1:-}" in
director)
    wait_link eth1
    ip addr add 10.10.0.1/24 dev eth1
    ip -6 addr add fd00:10::1/64 dev eth1 nodad
    ip link add br0 type bridge
    ip addr add 10.20.0.1/24 dev br0
    ip -6 addr add fd00:20::1/64 dev br0 nodad
    ip link set br0 up
    for i in 2 3 4; do
        wait_link "eth$i"
        ip link set "eth$i" master br0
    done
    sysctl -q -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    if [ ! -e /dev/net/tun ]; then
        mkdir -p /dev/net && mknod /dev/net/tun c 10 200
    fi
    rules=${ULB_RULES:-/lab/lab.rules}
    say "director: userlb run --config $rules --tun ulb0"
    exec userlb run --config "$rules" --tun ulb0
    ;;
server)
    name=${2:?node.sh server NAME (s1, s2, s3)}
    host=$((10 + ${name#s}))
    wait_link eth1
    ip addr add "10.20.0.$host/24" dev eth1
    ip -6 addr add "fd00:20::$(printf %x "$host")/64" dev eth1 nodad
    ip route add 10.10.0.0/24 via 10.20.0.1
    ip -6 route add fd00:10::/64 via fd00:20::1
    say "real server $name: 10.20.0.$host"
    exec python3 -m userlb.lab.servers --name "$name"
    ;;
client)
    wait_link eth1
    ip addr add 10.10.0.2/24 dev eth1
    ip addr add 10.10.0.3/24 dev eth1
    ip -6 addr add fd00:10::2/64 dev eth1 nodad
    ip -6 addr add fd00:10::3/64 dev eth1 nodad
    ip route add 10.99.0.1/32 via 10.10.0.1
    ip -6 route add fd00:99::1/128 via fd00:10::1
    say "client ready: 10.10.0.2-3, fd00:10::2-3"
    exec sleep infinity
    ;;
*)
    say "usage: node.sh director | server NAME | client"
    exit 2
    ;;
esac
