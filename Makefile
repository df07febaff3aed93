# The two commands of the README: `make run` and `make test`. Both create .venv first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

# A Python >= 3.12: python3.13, python3.12, then versions installed by pyenv.
PYTHON ?= $(shell for c in python3.13 python3.12 \
	$$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV); do \
	command -v $$c >/dev/null 2>&1 && $$c -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null \
	&& { command -v $$c; break; }; done)

.PHONY: messages run test venv bench bench-ingest bench-live bench-sockets bench-venue bench-semester bench-pages bench-binary binary deb clean

$(PY):
	@if [ -z "$(PYTHON)" ]; then echo "Opus needs Python 3.12 or newer: install python3.12 (apt install python3.12, or pyenv install 3.12) and run make again." >&2; exit 1; fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	@touch $@

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@ $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/opus serve

test: $(TEST_STAMP)
	$(VENV)/bin/ruff check opus tests bench
	$(VENV)/bin/ruff format --check opus tests bench
	$(VENV)/bin/mypy opus
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile --ignore tests/test_schema.py
	$(VENV)/bin/python -m pytest -q tests/test_schema.py  # schemathesis: not under xdist

# The pages' strings: extracted from the code into opus/locale/opus.pot, then merged into each
# language's catalog (new strings arrive empty: translate them; tests/test_i18n.py fails until
# every string has its translation). The server compiles the catalogs when it starts.
LANGS := es fr de ar ja
messages: $(TEST_STAMP)
	$(VENV)/bin/pybabel extract -F babel.cfg -k _ -k N_ -k ngettext:1,2 -k gettext:1,1t -k gettext:2,2t -k gettext:2,3t -k gettext:2,4t \
		-k pgettext:1c,2 \
		-k Opus.t -k Opus.nt:1,2 -c Translators: \
		--sort-by-file --project Opus --copyright-holder "The Opus authors" \
		-o opus/locale/opus.pot opus
	for lang in $(LANGS); do \
		if [ -f opus/locale/$$lang/LC_MESSAGES/opus.po ]; then \
			$(VENV)/bin/pybabel update -D opus -i opus/locale/opus.pot -d opus/locale -l $$lang --no-fuzzy-matching; \
		else \
			$(VENV)/bin/pybabel init -D opus -i opus/locale/opus.pot -d opus/locale -l $$lang; \
		fi; \
	done

# Every benchmark, each against its own fresh server: rewrites docs/benchmarks.md and the
# charts in docs/bench/ (about 20 minutes; `$(PY) bench/run.py --quick` is shorter).
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	@touch $@ $(TEST_STAMP) $(STAMP)

bench: $(BENCH_STAMP)
	$(PY) bench/run.py

# The fault suite at full size (kill -9 cycles, SIGTERM, full disk, bad clients, clock jumps);
# make test runs it at modest sizes. About ten minutes on 2 cores.
faults: $(TEST_STAMP)
	OPUS_FAULTS=full $(VENV)/bin/python -m pytest -q tests/faults

bench-ingest: $(TEST_STAMP)
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) build dist *.egg-info

bench-live: $(TEST_STAMP)
	$(PY) bench/live.py

bench-venue: $(TEST_STAMP)
	$(PY) bench/venue.py

# A socket vote's server CPU against GET /healthz, and the loop's stalls while 100,000 of them
# are taken and applied (about two minutes).
bench-sockets: $(TEST_STAMP)
	$(PY) bench/sockets.py

# A box that runs all semester: RSS across poll after poll of votes, each closed after its
# votes, and start-up on a million counted votes (10 to 15 minutes here; --votes, --polls and
# --live make it shorter).
bench-semester: $(TEST_STAMP)
	$(PY) bench/semester.py

# Bytes per page without and with compression, and the attendee page's first paint on a slow
# link in Debian's Chromium (about a minute).
bench-pages: $(TEST_STAMP)
	$(PY) bench/pages.py

# The single binary (PyInstaller, from opus.spec) and the Debian package around it. PyInstaller
# keeps its work in build/pyinstaller, so a rebuild after a small change is quicker; make skips
# it altogether while dist/opus is newer than every source file.
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' opus/__init__.py)
DEB_ARCH := $(shell dpkg --print-architecture 2>/dev/null)
BINARY := dist/opus
DEB := dist/opus_$(VERSION)_$(DEB_ARCH).deb
BINARY_SOURCES := opus.spec packaging/entry.py pyproject.toml \
	$(shell find opus -type f -not -path '*/__pycache__/*' -not -name '*.pyc')

binary: $(BINARY)

# One build at a time (flock), and the new file moved into place whole: a binary that is
# running, or being tested by another `make test` in this tree, is never overwritten mid-way.
$(BINARY): $(BINARY_SOURCES) | $(TEST_STAMP)
	@mkdir -p build dist
	flock build/binary.lock sh -c '$(PY) -m PyInstaller opus.spec --noconfirm --log-level WARN \
		--workpath build/pyinstaller --distpath build/pyinstaller/dist \
		&& mv build/pyinstaller/dist/opus $@'

deb: $(DEB)

$(DEB): $(BINARY) systemd/opus.service systemd/opus-kiosk.service $(wildcard packaging/deb/*) README.md LICENSE
	packaging/deb/build $(BINARY) $@

bench-binary: $(TEST_STAMP)
	$(PY) bench/binary.py
