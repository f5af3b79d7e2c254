# The two commands: `make run` (install what is needed, run the gateway with a local demo registrar)
# and `make test` (install what tests need, run every test). Both work on a fresh Debian 12 machine.

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
# Debian packages: the SIP/media engine and the demo registrar; for tests also SIP phones (sipp, baresip) and a
# browser (Chromium, driven by Playwright from PyPI, which never downloads a browser of its own here).
RUN_PACKAGES := janus kamailio
TEST_PACKAGES := $(RUN_PACKAGES) iproute2 sip-tester baresip chromium

.PHONY: run test unit integration system-packages system-test-packages venv clean

run: system-packages venv
	demo/run.sh

test: system-test-packages venv
	$(VPY) -m pytest tests

unit: venv
	$(VPY) -m pytest tests/unit

integration: system-test-packages venv
	$(VPY) -m pytest tests/integration

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
	rm -rf $(VENV) build dist *.egg-info twisted/plugins/dropin.cache
