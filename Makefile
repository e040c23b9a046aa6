# userlb: the two commands of the README are `make demo` and `make test`;
# `make lint` (ruff + mypy, configured in pyproject.toml) runs before the tests in CI.
# Each one creates/updates the local virtualenv (.venv) and installs the Debian
# packages it needs (as root, with apt-get) when they are missing.

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEBS   := iproute2 iperf3 socat curl nftables procps openssl ldirectord prometheus-node-exporter tshark bird2 exabgp keepalived
PYTEST_ARGS ?=

.PHONY: test lint demo bench sysdeps venv clean fuzz soak

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages used by the lab, the end-to-end tests and the benchmarks.
# The daemons among them (bird2, exabgp, keepalived, ...) are run by the tests
# inside namespaces; a policy-rc.d kept only for the install stops their
# packages from starting (or enabling) the system services on the host.
sysdeps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  rc=0; own_policy=""; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; \
	    own_policy=1; \
	  fi; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || rc=$$?; \
	  if [ -n "$$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  exit $$rc; \
	fi

test: venv sysdeps
	$(VPY) -m pytest -q $(PYTEST_ARGS)

# ruff over the code, tests, benchmarks and the docker lab; mypy (strict on model,
# sched, control, clock).  Both always run; the target fails if either does.
LINT_PATHS := userlb tests bench docker fuzz
lint: venv
	@rc=0; \
	$(VPY) -m ruff check $(LINT_PATHS) || rc=1; \
	$(VPY) -m mypy || rc=1; \
	exit $$rc

demo: venv sysdeps
	$(VPY) -m userlb.cli.main demo

bench: venv sysdeps
	$(VPY) bench/run.py

# The flood experiment (docs/flood-experiment.md; several minutes, root):
# regenerates docs/flood-experiment.md and .json (and .png with matplotlib).
.PHONY: flood-experiment
flood-experiment: venv sysdeps
	$(VPY) -m userlb.cli.main lab experiment flood

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .cache/mypy .cache/ruff

# The container lab (docker/README.md): installs docker.io, docker-compose and
# debootstrap if missing, builds the images (base image made with debootstrap,
# cached in .cache/docker), brings the lab up, sends traffic, prints the
# distribution and `userlb adm -L -n --stats`, tears it down.  Uses the engine
# DOCKER_HOST (or the default socket) points to; without one, a private engine.
.PHONY: docker-demo
docker-demo: venv
	docker/lab.sh run-demo

# Coverage-guided fuzzing with atheris (docs/fuzzing.md): each target of fuzz/
# for SECONDS seconds, starting from its corpus in fuzz/corpus/<target>; new
# inputs and crash files go to .cache/fuzz/ (a crash stops the run).
SECONDS ?= 60
FUZZ_TARGETS := packet_parse engine_process vnet_path ipvsadm_rules control_protocol
fuzz: venv
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p .cache/fuzz/$$t; echo "== fuzz $$t ($(SECONDS) s)"; \
	  PYTHONPATH=$(CURDIR) $(VPY) fuzz/$$t.py -max_total_time=$(SECONDS) -print_final_stats=1 \
	    -artifact_prefix=.cache/fuzz/$$t- .cache/fuzz/$$t fuzz/corpus/$$t \
	    >.cache/fuzz/$$t.log 2>&1; rc=$$?; \
	  grep -E "^#[0-9]+[[:space:]]+DONE|stat::(number_of_executed_units|average_exec_per_sec)" .cache/fuzz/$$t.log; \
	  if [ $$rc != 0 ]; then tail -n 40 .cache/fuzz/$$t.log; echo "fuzz $$t failed (exit $$rc)"; exit $$rc; fi; \
	done

# Soak (docs/soak.md): MINUTES of mixed TCP/UDP IPv4/IPv6 traffic through a
# lab director with live changes every second and a reload every minute, then
# the checks (RSS growth, entries back to 0, counters, no error lines).
MINUTES ?= 30
soak: venv sysdeps
	$(VPY) -m userlb.lab.soak --minutes $(MINUTES)
