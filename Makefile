# One-command entry points; each installs what a fresh Debian machine lacks first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench scale-image scale-test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v /usr/sbin/sshd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null; }
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

demo: setup  ## the main job: a command across a local fleet of 300 real sshd endpoints
	$(PY) -m scale.demo --hosts 300

test: setup  ## the test suite, against real sshd processes on loopback
	$(PY) -m pytest -q -p no:cacheprovider

bench: setup  ## hussh vs upstream hussh, parallel-ssh and plain asyncssh at 1000 hosts
	$(PY) -m scale.bench --hosts 3,1000 --repeat 3

clean:
	rm -rf $(VENV) *.egg-info
