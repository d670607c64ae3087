# One-command entry points; each installs what a fresh Debian machine lacks first.
VENV ?= .venv
PY := $(VENV)/bin/python
DOCKER_UP := $(shell docker info >/dev/null 2>&1 && echo yes)

.PHONY: setup demo lint test test-unit test-ray soak scale-image scale-test scale-full bench bench-compose bench-all bench-smoke bench-fleet-cpu bench-bastion clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v /usr/sbin/sshd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null; }
	@command -v unshare >/dev/null && command -v nsenter >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux mount >/dev/null; }
	@if [ -n "$(DOCKER_UP)" ] && ! command -v iptables >/dev/null; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null; fi
	@if [ -n "$(DOCKER_UP)" ] && ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; fi
	@command -v sudo >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sudo >/dev/null; }  # the fleet's sudo tests
	@command -v tmux >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux >/dev/null; }  # the CLI's terminal tests
	@if [ -n "$(DOCKER_UP)" ] && ! command -v debootstrap >/dev/null; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; fi
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --upgrade --upgrade-strategy eager -e '.[test]'  # the newest allowed versions, as a new user gets them
	@touch $@

demo: setup  ## the main job: a command across a local fleet of 300 real sshd endpoints
	$(PY) -m scale.demo --hosts 300

lint: setup  ## ruff over the code, then mypy: the library --strict, the tests' bodies (configs: pyproject.toml's [tool.ruff], [tool.mypy]); make test runs it first
	$(PY) -m ruff check hussh workers tests scale
	$(PY) -m mypy
	$(PY) -m mypy tests/unit --cache-dir .mypy_cache/unit  # apart: its conftest.py is another top-level "conftest"

test: setup lint  ## every test: real sshd on loopback, plus a 40-endpoint docker compose fleet when Docker answers (not the soak)
	$(PY) -m pytest -q -p no:cacheprovider -m "not soak"

test-unit: setup  ## the unit tier alone, in seconds: MultiConnection, rollouts, journal and CLI output on hussh.testing.MockEngine (no sshd)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

soak: setup  ## 200 calls on 1000 loopback hosts with faults; prints fds and RSS of caller and workers (minutes)
	HUSSH_SOAK_REPORT=soak.json $(PY) -m pytest -q -p no:cacheprovider -m soak -s -o timeout=1800 tests/test_soak.py

test-ray: setup  ## the Ray engine's tests (hussh.ray, docs/beyond-one-machine.md) on a local 3-node Ray cluster
	$(PY) -m pip install -q -e '.[test,ray]'
	$(PY) -m pytest -q -p no:cacheprovider -m ray tests/test_ray_engine.py tests/test_worker_trust.py
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

# Every table and plot of scale/README.md, regenerated on a quiet machine (each run waits for one, up to 120 s,
# and records the other load it saw). Takes hours: the 10k-host scaling runs dominate. Tables go between the
# README's bench-results markers; raw runs to scale/results/*.json.
EXPERIMENTS := hussh,hussh+chacha,hussh+abort-close,hussh+no-eof-reply,upstream
bench-all: setup bench-fleet-cpu bench-bastion  ## every benchmark of issues 8 and 12, >= 5 alternating repetitions each
	$(PY) -m scale.bench --hosts 3,1000 --repeat 5 --readme
	$(PY) -m scale.bench_scaling --sizes 1000,3000,10000 --repeat 5 --readme
	$(PY) -m scale.bench_rounds --hosts 1000 --rounds 20 --repeat 5 --readme
	$(PY) -m scale.bench_files --hosts 1000 --write-mb 10 --read-mb 1 --repeat 5 --readme
	$(PY) -m scale.bench_tail --hosts 1000 --rate 100 --duration 60 --repeat 5 --readme
	$(PY) -m scale.bench_outputs --hosts 1000 --mb 1 --repeat 5 --readme
	$(PY) -m scale.bench_outputs --hosts 1000 --mb 50 --tools hussh --repeat 1 --max-call-output 4000000000 --readme

bench-fleet-cpu: setup  ## where the fleet's CPU goes per client: negotiated algorithms, sshd's messages, experiments
	$(PY) -m scale.kexinit_probe --readme
	$(PY) -m scale.sshd_trace --tools hussh,upstream,pssh --readme
	$(PY) -m scale.bench --hosts 1000 --repeat 5 --tools $(EXPERIMENTS) --section fleet-cpu --readme

bench-bastion: setup  ## issue 8: 1000 hosts through one bastion vs direct, ssh -J, parallel-ssh; OpenSSH's bastion limits
	$(PY) -m scale.bench_bastion --hosts 1000 --repeat 5 --readme
	$(PY) -m scale.bastion_limits --hussh-hosts 1200 --hussh-limits 512,1024 --readme

bench-smoke: setup  ## every benchmark above at 50-200 hosts, 1 repetition, README untouched: checks they run (make test runs a cheap part: tests/test_bench_smoke.py)
	$(PY) -m scale.bench --hosts 50 --repeat 1 --quiet-wait 0 --tools $(EXPERIMENTS)
	$(PY) -m scale.bench_scaling --sizes 60,200 --repeat 1 --quiet-wait 0 --low-nofile 256 --plot /tmp/hussh-bench-scaling.png
	$(PY) -m scale.bench_rounds --hosts 100 --rounds 3 --repeat 1 --quiet-wait 0 --json /tmp/hussh-bench-rounds.json
	$(PY) -m scale.bench_files --hosts 50 --write-mb 2 --repeat 1 --quiet-wait 0 --tools hussh,upstream,pssh --json /tmp/hussh-bench-files.json
	$(PY) -m scale.bench_tail --hosts 50 --duration 5 --repeat 1 --quiet-wait 0 --json /tmp/hussh-bench-tail.json
	$(PY) -m scale.bench_outputs --hosts 50 --mb 1 --repeat 1 --quiet-wait 0 --json /tmp/hussh-bench-outputs.json
	$(PY) -m scale.bench_bastion --hosts 50 --repeat 1 --quiet-wait 0 --json /tmp/hussh-bench-bastion.json
	$(PY) -m scale.bastion_limits --limits 256 --max-channels 1000 --hussh-hosts 300 --hussh-limits 128
	$(PY) -m scale.kexinit_probe
	$(PY) -m scale.sshd_trace

clean:
	rm -rf $(VENV) *.egg-info
