"""Persistence (``-p timeout``, ``-M netmask``; docs/ipvs.md §1.8, §4.1-§4.3,
§7): the templates' keys, their validity check and their creation; the
engine (``Engine._persist``) puts them together for a new connection.

For a service with SVC_F_PERSISTENT a new connection is first looked up in
the persistence templates (conntrack.Template), keyed by (protocol, client
address & netmask -- IPv6: the first `netmask` bits --, VIP, vport); the
scheduler (hashing the full client address and port, as always) is only
consulted when there is no live, valid template, and its answer becomes a
new template (timeout = the service's ``-p`` timeout, counted in the
destination's PersistConn and in ``max_entries``; not in ``conns``, ActiveConn
or InActConn).  The connection is created as usual (``conns`` counted) and
controlled by the template (``n_control``), which

* is restarted to its timeout by every connection created through it;
* when its timer runs out while it still controls connections, is retried
  60 s later instead of expiring -- and, as in the kernel, keeps 60 s as its
  timeout from then on (later connections restart it to 60 s, not to ``-p``);
* is marked ASSURED (the ``-L -c`` state; NONE before) when a controlled
  TCP connection reaches ESTABLISHED;
* is *invalid* when its destination is no longer available (deleted from the
  service, or the service deleted), or -- only with the kernel's sysctl
  ``expire_quiescent_template`` (engine option, default off as in the
  kernel) -- when the destination's weight is 0: the default keeps sending a
  client with a template to a weight-0 (quiesced) server.  An invalid
  template is detached (the kernel re-hashes it with vport/dport 0xffff, as
  ``entries()`` shows it), not refreshed, expires on its own, and a new one
  is scheduled.

A SYN on a TIME_WAIT/CLOSE entry that is controlled by a template is not a
new connection (conn_reuse_mode): it moves the existing entry by the state
table, to the same server.  A template's key has the vport of the service,
except for port 21 (the kernel's FTP rule: vport and dport 0).  Switching a
service to non-persistent (``-E``) or changing its netmask leaves the
existing templates to expire.

Differences from the kernel: a UDP template is not marked ASSURED by a reply
(the UDP fast path is left alone; only the ``-L -c`` state name differs); a
template is retried while it still counts a controlled connection that has
run out but not yet been swept (at most the sweep's one second).
"""
from .conntrack import Template, mask6, tpl_key

_FTP_PORT = 21      # persistence templates of a port-21 service: vport 0 (kernel FTPPORT)


def template_key(svc, proto, caddr):
    """(proto, client & netmask, 0, VIP, vport -- 0 for port 21) as a key."""
    m = svc.netmask
    c = caddr & m if type(caddr) is int else mask6(caddr, m)
    vport = svc.port
    return tpl_key(proto, c, svc.addr, 0 if vport == _FTP_PORT else vport)


def valid_template(ct, tkey, now, expire_quiescent):
    """The client's live, valid template (key `tkey`) in the ConnTable `ct`,
    restarted to its timeout (kernel ip_vs_sched_persist +
    ip_vs_check_template), or None.  `expire_quiescent`: the sysctl
    expire_quiescent_template."""
    tpl = ct.template(tkey, now)
    if tpl is None:
        return None
    d = tpl.xl.dest
    if not d.available or (expire_quiescent and d.weight <= 0):
        ct.detach(tpl)                  # invalid: left to expire, not restarted
        return None
    tpl.last = now
    return tpl


def new_template(ct, tkey, xl, now, timeout):
    """Link a new template binding `tkey` to the pair `xl` (the caller
    checked the room); counted in the destination's PersistConn."""
    tpl = Template(tkey, xl, now, timeout)
    dest = xl.dest
    dest.persistconns += 1
    dest.conn_bound()
    ct.add_template(tpl)
    return tpl
