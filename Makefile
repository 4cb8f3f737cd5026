# CIM Twin: set-up, demo, tests and benchmarks.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= twin-data
PORT ?= 8000
export TWIN_TESTDATA ?= $(abspath ../shared/testdata)

.PHONY: install demo demo-data serve test bench lint clean osgconv

install: $(VENV)/.installed node_modules/.installed

node_modules/.installed: $(wildcard package.json)
	@if [ -f package.json ]; then npm install --no-audit --no-fund --loglevel=error && touch $@; fi

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: install osgconv  ## build the demo district (first time) and serve it on http://localhost:$(PORT)
	@if [ -f $(DATA)/twin.gpkg ]; then $(BIN)/twin serve --data $(DATA) --port $(PORT); \
	else $(BIN)/twin demo --data $(DATA) --port $(PORT); fi

demo-data: install osgconv  ## build the demo district and exit
	@[ -f $(DATA)/twin.gpkg ] || $(BIN)/twin demo --data $(DATA) --no-serve

osgconv:  ## OpenSceneGraph's osgconv reads the OSGB reality mesh (Debian package openscenegraph)
	@command -v osgconv >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq --no-install-recommends openscenegraph >/dev/null; } \
	|| { echo "OSGB reality meshes need OpenSceneGraph: sudo apt-get install openscenegraph" >&2; exit 1; }

serve: install
	$(BIN)/twin serve --data $(DATA) --port $(PORT)

test: install  ## the whole test suite
	$(BIN)/python -m pytest -q

bench: install  ## benchmarks, printed as ratios against named baselines
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache
