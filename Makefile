# The two commands: `make run` (install what is needed, run the gateway with a local demo registrar)
# and `make test` (install what tests need, run every test). Both work on a fresh Debian 12 machine.

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
# Debian packages: the SIP/media engine, the demo registrar and Python's venv module (not in a fresh Debian 12's
# python3); for tests also SIP phones (sipp, baresip) and a browser (Chromium, driven by Playwright from PyPI, which
# never downloads a browser of its own here).
RUN_PACKAGES := janus kamailio python3-venv
TEST_PACKAGES := $(RUN_PACKAGES) iproute2 sip-tester baresip chromium postgresql

# The browser library, built by npm from js/sylkrtc and served by the gateway (never committed).
JS := js/sylkrtc
JS_BUILT := sylk/gateway/web/sylkrtc.js

.PHONY: run test bench unit integration system-packages system-test-packages venv js node clean

run: system-packages venv js
	demo/run.sh

test: system-test-packages venv js
	$(VPY) -m pytest tests

# Every benchmark side by side with raw Janus (bench/README.md; about 8 minutes on 2 cores, as root).
bench: system-test-packages venv js
	$(VPY) bench/all.py

unit: venv js
	$(VPY) -m pytest tests/unit

integration: system-test-packages venv js
	$(VPY) -m pytest tests/integration

js: $(JS_BUILT)

$(JS_BUILT): $(JS)/node_modules/.package-lock.json $(wildcard $(JS)/src/*.ts) $(JS)/tsconfig.json
	cd $(JS) && npm run --silent build:gateway

$(JS)/node_modules/.package-lock.json: $(JS)/package-lock.json | node
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error

# Node.js 18 or newer with npm. Without an npm, Debian's nodejs and npm packages (18.20 and 9.2 in Debian 12); an
# npm already there is used as it is (e.g. nodesource's nodejs, which brings its own and conflicts with Debian's npm).
node:
	@command -v npm >/dev/null || scripts/apt-install nodejs npm
	@version=$$(node -p process.versions.node 2>/dev/null) || { echo "npm is installed but node is not: install Node.js 18 or newer"; exit 1; }; \
	[ "$${version%%.*}" -ge 18 ] || { echo "Node.js $$version is too old: the browser library needs Node.js 18 or newer"; exit 1; }

system-packages:
	@scripts/apt-install $(RUN_PACKAGES)

system-test-packages:
	@scripts/apt-install $(TEST_PACKAGES)

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	# compat mode puts the checkout on sys.path, which Twisted's plugin scan needs to find twisted/plugins/.
	$(VPY) -m pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $@

clean:
	rm -rf $(VENV) build dist *.egg-info twisted/plugins/dropin.cache $(JS)/node_modules $(JS)/dist $(JS_BUILT)

# The Debian package, from a clean copy of this checkout (installs the Build-Depends with apt-get; builds sylkrtc.js
# with npm): dist/sylkgateway_VERSION_all.deb, then lintian on it if lintian is installed (debian/README.source).
.PHONY: deb
deb:
	scripts/build-deb dist
	@if command -v lintian >/dev/null; then lintian --fail-on error dist/sylkgateway_*_all.deb; fi
