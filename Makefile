# warren: one command for a working lab (`make lab`), one for the tests (`make test`).
# Everything runs as root on a Debian 12/13 machine; see README.md.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT        := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV        := $(ROOT)/.venv
BIN         := $(VENV)/bin
PY          ?= python3
COLL_ROOT   := $(ROOT)/.build/collections
COLL_LINK   := $(COLL_ROOT)/ansible_collections/warren/rabbitmq
APT_PKGS    := podman runc debootstrap iptables uidmap netavark aardvark-dns python3-venv git make sslscan

export CONTAINERS_CONF := $(ROOT)/lab/containers.conf
export ANSIBLE_CONFIG  := $(ROOT)/ansible.cfg
export PATH            := $(BIN):$(PATH)
export MOLECULE_NO_LOG := false

.PHONY: help deps venv collection image lab lab-up lab-down lab-summary test lint unit package-test \
        promtool sanity dashboards dashboards-check molecule build bench-converge clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

deps: .build/deps.stamp  ## install the apt packages the lab and tests need
.build/deps.stamp: Makefile
	@mkdir -p .build
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "[deps] apt-get install $$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "[deps] apt packages present"; fi
	@touch $@

venv: $(VENV)/.stamp  ## create .venv with the pinned Python packages
$(VENV)/.stamp: requirements.txt
	@echo "[venv] installing requirements.txt into .venv"
	@$(PY) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -r requirements.txt
	@touch $@

collection: $(COLL_LINK)  ## make the repo importable as warren.rabbitmq (symlink under .build)
$(COLL_LINK):
	@mkdir -p $(dir $(COLL_LINK))
	@ln -sfn $(ROOT) $(COLL_LINK)

image: deps  ## build the lab base image (only when its recipe changed)
	@lab/build-image.sh

lab: deps venv collection image  ## bring up the lab: hosts, then site.yml, then a summary
	@lab/lab.sh up
	@echo "[lab] ansible-playbook playbooks/site.yml -i inventories/lab"
	@$(BIN)/ansible-playbook -i inventories/lab playbooks/site.yml
	@$(BIN)/ansible-playbook -i inventories/lab lab/summary.yml

lab-summary: venv collection  ## print the lab summary again
	@$(BIN)/ansible-playbook -i inventories/lab lab/summary.yml

lab-down: venv  ## remove the lab hosts and network (nothing else)
	@lab/lab.sh down

test: lint unit promtool sanity molecule  ## everything CI runs: lint, unit, rules, sanity, Molecule
	@echo "[test] all green: lint, unit, promtool, sanity, molecule ($(MOLECULE_SCENARIOS))"

lint: venv collection build package-test dashboards-check  ## yamllint, ansible-lint (production), build, install test, dashboards
	@echo "[lint] yamllint"
	@$(BIN)/yamllint -s .
	@echo "[lint] ansible-lint --profile production"
	@$(BIN)/ansible-lint --profile production
	@echo "[lint] playbook syntax (lab and production inventories)"
	@$(BIN)/ansible-playbook -i inventories/lab playbooks/site.yml --syntax-check >/dev/null
	@$(BIN)/ansible-playbook -i inventories/production playbooks/site.yml --syntax-check >/dev/null

build: venv  ## ansible-galaxy collection build into .build/dist
	@mkdir -p .build/dist
	@$(BIN)/ansible-galaxy collection build --force --output-path .build/dist . >/dev/null
	@echo "[build] $$(ls .build/dist/*.tar.gz)"

package-test: build  ## install the built tarball into a clean ansible-core venv and syntax-check its playbooks
	@tests/package/install.sh

unit: venv collection  ## pytest for the collection's Python
	@echo "[unit] pytest tests/unit"
	@$(BIN)/pytest -q tests/unit

promtool: deps  ## promtool check + unit tests of every alert and recording rule (no containers)
	@tests/promtool/run.sh

sanity: venv  ## ansible-test sanity on the plugins (the full set, offline: tests/sanity.sh)
	@tests/sanity.sh

dashboards: venv  ## regenerate the Grafana dashboards from tools/dashboards/build.py
	@$(BIN)/python tools/dashboards/build.py

dashboards-check: venv  ## fail if the committed dashboard JSON is stale
	@$(BIN)/python tools/dashboards/build.py --check

# Every scenario under molecule/ that has passed end to end, the one-node `default` first so a
# broken role fails fast. Scenarios still being brought up are listed in MOLECULE_PENDING and run
# only on request (`make molecule MOLECULE_SCENARIOS=drills`): a scenario joins CI once it has
# passed, never before (see the open issues for drills and loadtest).
MOLECULE_PENDING ?= drills
MOLECULE_SCENARIOS ?= default $(filter-out default shared $(MOLECULE_PENDING),$(sort $(notdir $(wildcard molecule/*))))
molecule: deps venv collection image  ## run every Molecule scenario (MOLECULE_SCENARIOS="a b" to pick)
	@for s in $(MOLECULE_SCENARIOS); do \
	  echo "[molecule] scenario $$s"; \
	  start=$$(date +%s); \
	  $(BIN)/molecule test -s $$s || { echo "[molecule] scenario $$s FAILED"; exit 1; }; \
	  echo "[molecule] scenario $$s passed in $$(( $$(date +%s) - start )) s"; \
	done

bench-converge: deps venv collection image  ## time a cold and a warm `make lab`, write JSON
	@$(BIN)/python bench/bench_converge.py

clean:  ## remove build output (not the lab, not the venv)
	rm -rf .build/dist .build/collections

.PHONY: dr-drill
dr-drill: venv collection image  ## DR drill in the lab: destroy every broker, recreate blank, dr-restore.yml, print the RTO
	@playbooks/dr/drill-total-loss.sh

.PHONY: bench-load
bench-load: venv collection  ## load benchmark on the lab (under the Molecule and lab locks: a quiet machine): knee, quorum/classic ratio, generator cost; writes JSON
	@flock -o /tmp/warren-molecule.lock flock -o /tmp/warren-lab.lock $(BIN)/python bench/bench_load.py

# Failure drills in the lab (playbooks/drills/, docs/resilience.md). Each run holds the lab lock
# for one drill only, so others can use the lab in between. The lab's shared 2-core machine
# raises some alerts by itself (host CPU, a disk-fill prediction on the shared disk, the
# canary's latency objective, the unsynchronised clock): they say nothing about the cluster,
# so the lab's drills do not wait for them (docs/resilience.md#steady-state). Back-to-back
# kill, restart and full_restart drills restart nodes several times within 30 minutes, which
# RabbitMQNodeRestartLoop rightly reports, and every drill spends some of the canary's error
# and latency budgets, so the burn-rate alerts (30 m to 3 d windows) keep firing long after the
# cluster is healthy again: a series of drills does not wait for them either (the cluster-health
# half of the gate still applies to every run).
DRILLS ?= partition kill pause restart disk_alarm memory_alarm slow_consumer latency majority_loss full_restart
DRILL_RUNS ?= 1
DRILL_ARGS ?=
# Seconds each drill waits at its steady-state gate for the previous drill's alerts to resolve.
DRILL_START_WAIT ?= 900
DRILL_LAB_IGNORE_DEFAULT := Watchdog,HostClockNotSynchronising,HostHighCpuUsage,RabbitMQDiskSpaceLowPredicted,RabbitMQCanaryLatencyAboveObjective,RabbitMQNodeRestartLoop
DRILL_LAB_IGNORE_DEFAULT := $(DRILL_LAB_IGNORE_DEFAULT),RabbitMQCanaryErrorBudgetFastBurn,RabbitMQCanaryErrorBudgetSlowBurn,RabbitMQCanaryLatencyBudgetFastBurn
DRILL_LAB_IGNORE ?= $(DRILL_LAB_IGNORE_DEFAULT)
.PHONY: drills
drills: venv collection  ## run the drill catalogue in the lab (DRILLS="kill pause", DRILL_RUNS=5), then reports/drills/summary.md
	@failed=""; for d in $(DRILLS); do for i in $$(seq 1 $(DRILL_RUNS)); do \
	  echo "[drills] $$d, run $$i of $(DRILL_RUNS) (waiting for the lab lock)"; \
	  flock /tmp/warren-lab.lock $(BIN)/ansible-playbook -i inventories/lab playbooks/drills/$$d.yml \
	    -e drill_accept_outage=true -e drill_ignore_alerts=$(DRILL_LAB_IGNORE) \
	    -e drill_steady_state_wait_seconds=$(DRILL_START_WAIT) $(DRILL_ARGS) \
	    || failed="$$failed $$d#$$i"; \
	done; done; \
	$(BIN)/ansible-playbook -i inventories/lab playbooks/drills/summary.yml; \
	if [ -n "$$failed" ]; then echo "[drills] FAILED:$$failed (reports/drills/*/report.md)"; exit 1; fi; \
	echo "[drills] all passed: reports/drills/summary.md"
