# aestream — the README's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export OMP_NUM_THREADS ?= 2
# pytest-xdist workers for `make test`: most integration tests wait on the broker and on subprocesses, so two
# workers halve the suite on 2 cores; the tests that start several aestream processes, or serve the shipped
# config's fixed metrics ports, share one worker (xdist_group "processes") and never run beside each other
TEST_WORKERS ?= 2
PYTEST_PAR := -n $(TEST_WORKERS) --dist loadgroup

.PHONY: install kafka promtool demo test test-unit lint bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,report,parquet]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install aestream with its dev extras

kafka:  ## fetch the Apache Kafka jars from Maven Central (cached in deploy/kafka/lib)
	bash deploy/kafka/kafka.sh fetch

promtool: $(BIN)/promtool  ## promtool for the alerting rules' tests: from PATH, else unpacked from the Debian package prometheus

# Without apt-get (not Debian/Ubuntu) the rules' tests skip, except under CI=true, where they fail.
$(BIN)/promtool: | $(STAMP)
	bash deploy/prometheus/promtool.sh $(BIN) || { [ -z "$$CI" ] && echo "make: no promtool: its tests will skip" >&2; }

demo: install kafka  ## the whole pipeline on a simulated plant (starts a local broker on 127.0.0.1:19092)
	$(BIN)/aestream --log-level WARNING demo

test: install kafka promtool  ## every test: unit, doctests and integration against a real broker the tests start
	PROMTOOL=$(abspath $(BIN))/promtool $(BIN)/python -m pytest $(PYTEST_PAR)

test-unit: install promtool  ## only the tests that need no broker
	PROMTOOL=$(abspath $(BIN))/promtool $(BIN)/python -m pytest $(PYTEST_PAR) -m "not integration"

bench: install kafka  ## throughput, latency, memory, scoring and the Quix Streams peer; last line is one JSON object
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/throughput.py

soak: install kafka  ## 20 kill -9 cycles under load on a private broker; prints one JSON line (~6 min)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/soak.py

lint: install
	$(BIN)/ruff check aestream tests benchmarks
	$(BIN)/mypy aestream

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
