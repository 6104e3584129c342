# Everything the project needs, from a fresh Debian machine (as root), idempotently.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# hls.js for the player pages of sr-proxy and the live server (srtools/httpserve.py), from npm.
HLS_JS := vendor/hls.min.js
DEBIAN_PACKAGES := ffmpeg python3 python3-venv

.PHONY: all deps lint test test-fast demo demo-offline man generic-model generic-tcsr bench clean

all: $(STAMP) $(HLS_JS)

# Debian packages, installed only when a command is missing.
deps:
	@missing=""; \
	command -v ffmpeg >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	[ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ] || missing="$$missing libnginx-mod-rtmp"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	command -v $(PYTHON) >/dev/null 2>&1 || missing="$$missing python3"; \
	$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): setup.cfg pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

$(HLS_JS): | deps
	rm -rf vendor/package vendor/hls.js-*.tgz
	mkdir -p vendor
	cd vendor && npm pack --silent hls.js@1 >/dev/null && tar -xzf hls.js-*.tgz package/dist/hls.min.js
	mv vendor/package/dist/hls.min.js $@
	rm -rf vendor/package vendor/hls.js-*.tgz

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint $(HLS_JS)
	$(BIN)/python -m pytest -q

test-fast: lint $(HLS_JS)
	$(BIN)/python -m pytest -q -m "not slow"

# The live system on one machine for about a minute (INPUT=clip.mp4 for your own clip with audio).
demo: $(STAMP) $(HLS_JS)
	$(BIN)/python samples/live_demo.py $(if $(INPUT),--input "$(INPUT)")

# The offline example: train on a recording, serve the rest through a shell pipeline, compare.
demo-offline: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" sh samples/demo.sh

man: $(STAMP)
	$(BIN)/python -m srtools.manpage man

# Re-train the generic start that ships in srtools/generic/ (its time on 2 cores: docs/benchmarks.md; see srtools/generic.py).
generic-model: $(STAMP)
	$(BIN)/python -m srtools.generic

generic-tcsr: $(STAMP)
	$(BIN)/python -m srtools.generic --arch tcsr

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_quality.py

clean:
	rm -rf $(VENV) vendor demo-output .pytest_cache
