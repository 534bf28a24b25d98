# One entry point for humans and CI. `make run` and `make test` install first when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MAPPERS := $(patsubst %/pyproject.toml,%,$(wildcard mappers/*/pyproject.toml))
# The gateway with its embedded MQTT broker (amqtt pins websockets, so it is an extra).
GATEWAY := $(if $(wildcard gateway/pyproject.toml),gateway[embedded-broker])
PROJECTS := pyproject.toml $(wildcard mappers/*/pyproject.toml) $(wildcard gateway/pyproject.toml)

.PHONY: install run test lint bench system-deps clean

$(STAMP): $(PROJECTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' $(addprefix -e ,$(MAPPERS)) $(if $(GATEWAY),-e '$(GATEWAY)')
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/mapper-gateway demo

system-deps:
	scripts/system-deps

test: install system-deps
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy mapper_sdk $(wildcard mappers/*/mapper_*) $(wildcard gateway/mapper_gateway)

bench: install system-deps
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache benchmarks/results
