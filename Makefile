# tinsnip's front door. `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TIN     = $(BIN)/inv
LAB_INV = .lab/hosts.yaml
# Thin wrappers: make machine SERVICE=gazette ENV=prod [DRY_RUN=1] [INVENTORY=...]
SERVICE ?=
ENV     ?= prod
INVENTORY ?= $(if $(wildcard hosts.local.yaml),hosts.local.yaml,hosts.yaml)
DRY     = $(if $(DRY_RUN),--dry-run,)
ROOT    = $(shell id -u)

.PHONY: install deps test unit lab-test lint lab lab-down lab-status demo machine deploy status bench clean

install: $(VENV)/.installed            ## virtualenv with tinsnip and its pinned dependencies

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

deps:                                  ## system packages for the lab (Debian/Ubuntu, as root)
	@if [ "$(ROOT)" = 0 ]; then bash scripts/install-deps.sh; \
	else echo "deps: not root, skipping system packages (the lab tests will be skipped)"; fi

# As root (CI), a skipped test or a lab suite that ran nothing fails `make test`; not root, the lab
# suite is skipped, saying so (TINSNIP_TESTS_STRICT=1 makes that fail too, as .ci/run does).
STRICT  = $(if $(filter 0,$(ROOT)),1,$(TINSNIP_TESTS_STRICT))

test: install deps                     ## unit tests, then the lab suite on real hosts
	TINSNIP_TESTS_STRICT=$(STRICT) $(BIN)/pytest -m 'not lab' tests
	TINSNIP_TESTS_STRICT=$(STRICT) $(BIN)/pytest -m lab tests -x

unit: install
	$(BIN)/pytest -m 'not lab' tests

lint: install
	$(BIN)/ruff check tinsnip tests tasks.py bench

lab: install deps                      ## start the lab: a NAS and two Docker hosts on this machine
	$(TIN) lab.up

lab-down: install
	$(TIN) lab.down

lab-status: install
	$(TIN) lab.status

demo: lab                              ## the main job on the lab: a machine-env, a service, their status
	bash scripts/demo.sh

machine: install
	$(TIN) machine.create --service=$(SERVICE) --env=$(ENV) --inventory=$(INVENTORY) $(DRY)

deploy: install
	$(TIN) service.deploy --service=$(SERVICE) --env=$(ENV) --inventory=$(INVENTORY) $(DRY)

status: install
	$(TIN) machine.status --inventory=$(INVENTORY)

bench: install deps                    ## tinsnip against Ansible on the lab: bench/results.json
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
