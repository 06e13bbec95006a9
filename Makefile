# The README's two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
comma := ,
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test check venv bench clean

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "masante-mail needs Python 3.11 or newer")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

venv: $(STAMP)

## make run: set up a demo (configuration, keys, TLS, database under var/) and start the server
run: $(STAMP)
	$(VENV)/bin/masante-admin init --demo
	exec $(VENV)/bin/masante-server

## make test: set up, check (lint, layering, types) and run the whole suite
## (its PostgreSQL half runs when 127.0.0.1:5432 answers, and must in CI)
## on PYTEST_WORKERS processes (pytest-xdist; `auto`: one per core), each test file whole in one of them (its
## module-scoped servers and its tests' order as in one process), files handed out in collection order (not
## largest first: one-test files such as the docker smoke and the crash campaigns must not come last);
## PYTEST_WORKERS=0 (or PYTEST_ARGS='-p no:xdist') runs the suite in this one process
PYTEST_WORKERS ?= auto
XDIST_ARGS = $(if $(findstring no:xdist,$(PYTEST_ARGS)),,-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder)
test: $(STAMP) check
	$(PY) -m pytest $(XDIST_ARGS) $(PYTEST_ARGS)

check: $(STAMP)
	$(VENV)/bin/ruff check --quiet .
	$(VENV)/bin/ruff format --check --quiet .
	$(VENV)/bin/lint-imports --no-cache >/dev/null || $(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

bench: $(STAMP)

## make bench-imap: 20 IMAP clients doing a mail client's mix, then RSS with 1,000 and 10,000 idle connections
.PHONY: bench-imap
bench: bench-imap
bench-imap: $(STAMP)
	$(PY) bench/imap_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

## make bench-directory: import 100,000 and 1,000,000 generated PS_LibreAcces lines (lines/s, peak memory), open 100,000 patients
.PHONY: bench-directory
bench: bench-directory
bench-directory: $(STAMP)
	$(PY) -m bench.directory_bench $(BENCH_ARGS)

## make bench-smtp: 20 connections submitting 400 messages (2 KB to 2 MB, PDFs) into the encrypted store, then 400
## 4 KB letters over reused connections, then the same with a new connection (STARTTLS, AUTH) per message
.PHONY: bench-smtp
bench: bench-smtp
bench-smtp: $(STAMP)
	$(PY) bench/smtp_bench.py $(BENCH_ARGS)
	$(PY) bench/smtp_bench.py --letters $(BENCH_ARGS)
	$(PY) bench/smtp_bench.py --letters --reconnect $(BENCH_ARGS)

## make bench-peers: the IMAP and SMTP workloads on private Dovecot and Postfix->Dovecot instances (installed
## from Debian when missing; 127.0.0.1 high ports, never the system services) and on masante: figures and ratios
.PHONY: bench-peers
bench: bench-peers
bench-peers: $(STAMP)
	$(PY) bench/peers.py $(BENCH_ARGS)

## make fuzz: the suite's Hypothesis fuzz tests (IMAP parser, SMTP DATA reader and command parameters, MIME parser,
## XDM/zip and METADATA.XML reader, whitelist importer) with 20x their examples (FUZZ_SCALE=N to change), under
## branch coverage of the code they aim at; only the readers' own errors may escape. Hypothesis prints the examples run.
FUZZ_SCALE ?= 20
FUZZ_TARGETS := mailserver/imap/protocol,mailserver/smtp/data.py,mailserver/smtp/params.py,mailserver/message,policies/xdm.py,directory/whitelist.py
.PHONY: fuzz
fuzz: $(STAMP)
	MASANTE_FUZZ_SCALE=$(FUZZ_SCALE) $(PY) -m coverage run --branch --include='*$(subst $(comma),*$(comma)*,$(FUZZ_TARGETS))*' \
		-m pytest -q -p no:cacheprovider --timeout=0 --hypothesis-show-statistics \
		tests/imap/test_parser.py tests/smtp/test_data_reader.py tests/message/test_fuzz.py \
		tests/policies/test_fuzz_inputs.py $(PYTEST_ARGS)
	$(PY) -m coverage report --skip-empty

## make bench-broadcast: one information message to 100,000 patient mailboxes (time, copies/s, storage)
.PHONY: bench-broadcast
bench: bench-broadcast
bench-broadcast: $(STAMP)
	$(PY) -m bench.broadcast_bench $(BENCH_ARGS)

## make docker-smoke: build docker/'s images (on a debootstrap base image made once) and compose stack, start it,
## submit a message and read it over IMAPS through the ports published on 127.0.0.1, take it down (root: installs
## docker.io, docker-compose and debootstrap when missing, starts dockerd when none answers)
.PHONY: docker-smoke
docker-smoke: $(STAMP)
	$(PY) docker/smoke.py $(SMOKE_ARGS)

## make bench-memory: the server's peak RSS for one, then 8 parallel 49 MB submissions (per message in flight)
.PHONY: bench-memory
bench: bench-memory
bench-memory: $(STAMP)
	$(PY) bench/memory_bench.py $(BENCH_ARGS)

## make bench-crash: SIGKILL masante-server 10 times per database under 20 SMTP + 20 IMAP clients, and masante-admin
## during keys rotate and trust import; after each restart every 250 and APPEND OK is there once, audit verify passes
.PHONY: bench-crash
bench: bench-crash
bench-crash: $(STAMP)
	$(PY) bench/crash_bench.py $(BENCH_ARGS)
