# chaosmem: `make demo` runs a real experiment against the local backend; `make test` runs the tests.
# Both set up everything they need on a fresh Debian machine (a venv, and Debian packages when missing;
# package installs never start the packages' own services: tests and benches start what they need).

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The Go demo service (demo/orders) builds offline in GOPATH mode against Debian's Go packages.
GO_PACKAGES := golang-go golang-github-prometheus-client-golang-dev
DEB_PACKAGES ?= chromium wrk nginx-light prometheus $(GO_PACKAGES) qemu-system-x86 busybox-static cpio gcc
ORDERS := demo/bin/orders
ORDERS_SRC := $(wildcard demo/orders/*.go)
STAMP := $(VENV)/.installed

.PHONY: setup deps native demo test test-v2 lint bench clean orders

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) deps native

# The replay engine compiled with mypyc (chaosmem/traffic/native.py): a no-op when the build is
# up to date; without a C compiler it says so and the interpreted engine runs.
native: $(STAMP)
	$(VENV)/bin/chaosmem native

# make demo needs chaosmem, not the test tools: a full setup already counts.
$(VENV)/.installed-demo: pyproject.toml
	@if [ $(STAMP) -nt pyproject.toml ]; then touch $@; else \
	  python3 -m venv $(VENV) && $(PY) -m pip install -q --upgrade pip && \
	  $(PY) -m pip install -q -e . && touch $@; fi

deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  blocked=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && blocked=1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  rc=$$?; [ -n "$$blocked" ] && rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi

# The Go demo service; rebuilt only when its sources change. Go is installed when missing.
orders: $(ORDERS)

$(ORDERS): $(ORDERS_SRC)
	@command -v go >/dev/null 2>&1 && [ -d /usr/share/gocode/src/github.com/prometheus/client_golang ] \
	  || $(MAKE) --no-print-directory deps DEB_PACKAGES="$(GO_PACKAGES)"
	mkdir -p demo/bin
	cd demo/orders && GO111MODULE=off GOPATH=/usr/share/gocode CGO_ENABLED=0 \
	  GOCACHE=$${GOCACHE:-$${HOME:-/tmp}/.cache/go-build} \
	  go build -o ../bin/orders.tmp . && mv ../bin/orders.tmp ../bin/orders

# The main job: a game day on the Go orders service (demo/run_demo.py says what it does). Installs
# only what the demo needs; without Go or Prometheus it says so and runs experiments/local-oom.json.
demo: $(VENV)/.installed-demo
	-@$(MAKE) --no-print-directory deps DEB_PACKAGES="prometheus $(GO_PACKAGES)"
	-@$(MAKE) --no-print-directory orders
	$(PY) demo/run_demo.py

test: setup
	$(PY) -m pytest -q
	@# the replay engine's own tests again on its interpreted modules (the suite ran compiled ones)
	CHAOSMEM_NATIVE=0 $(PY) -m pytest -q tests/test_traffic_replay.py tests/test_traffic_scale.py
	$(MAKE) --no-print-directory test-v2

# The kernel tests again, on a real cgroup v2 kernel: Debian's kernel under qemu (tests/vm/lane.py;
# the kernel and initramfs are cached in .cache/vm).
test-v2: setup
	$(PY) tests/vm/lane.py

lint: $(STAMP)
	$(VENV)/bin/ruff check chaosmem tests bench
	$(VENV)/bin/ruff format --check chaosmem tests bench
	$(VENV)/bin/mypy

bench: setup
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .cache/vm chaosmem/traffic/_native build dist *.egg-info reports/*.html reports/*.md reports/*.xml demo/bin
