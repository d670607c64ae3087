# One-command entry points; each installs what a fresh Debian machine lacks first.
VENV ?= .venv
PY := $(VENV)/bin/python
DOCKER_UP := $(shell docker info >/dev/null 2>&1 && echo yes)

.PHONY: setup demo test test-ray scale-image scale-test scale-full bench bench-compose clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v /usr/sbin/sshd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null; }
	@command -v unshare >/dev/null && command -v nsenter >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux mount >/dev/null; }
	@if [ -n "$(DOCKER_UP)" ] && ! command -v iptables >/dev/null; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null; fi
	@if [ -n "$(DOCKER_UP)" ] && ! command -v debootstrap >/dev/null; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; fi
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

demo: setup  ## the main job: a command across a local fleet of 300 real sshd endpoints
	$(PY) -m scale.demo --hosts 300

test: setup  ## every test: real sshd on loopback, plus a 40-endpoint docker compose fleet when Docker answers
	$(PY) -m pytest -q -p no:cacheprovider -m "scale or not scale"

test-ray: setup  ## the Ray engine's tests (hussh.ray, docs/beyond-one-machine.md) on a local 3-node Ray cluster
	$(PY) -m pip install -q -e '.[test,ray]'
	$(PY) -m pytest -q -p no:cacheprovider -m ray tests/test_ray_engine.py
	$(PY) -m pytest -q -p no:cacheprovider tests/test_docs.py -k beyond-one-machine

scale-image: setup  ## build the fleet's base and sshd images locally (no registry needed)
	$(PY) -m hussh.testing image

scale-test: setup  ## the scale suite alone; HUSSH_SCALE_ENDPOINTS / HUSSH_SCALE_PER_CONTAINER size it
	$(PY) -m pytest -q -p no:cacheprovider -m scale

scale-full: setup  ## the scale suite on 1000 endpoints (100 containers x 10 sshd)
	HUSSH_SCALE_ENDPOINTS=1000 HUSSH_SCALE_PER_CONTAINER=10 $(PY) -m pytest -q -p no:cacheprovider -m scale -o timeout=1800

bench: setup  ## hussh vs upstream hussh, parallel-ssh and plain asyncssh at 3 and 1000 loopback hosts
	$(PY) -m scale.bench --hosts 3,1000 --repeat 3

bench-compose: setup  ## the same on a 1000-endpoint compose fleet at several sizes: table in scale/README.md + plot
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m scale.bench --compose 1000 --hosts 100,300,1000 --repeat 1 --plot scale/bench-compose.png --readme

clean:
	rm -rf $(VENV) *.egg-info
