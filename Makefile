# The README's two commands, `make serve` and `make test`, plus the developer targets.
SHELL := /bin/bash
BUILD ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
SHARED ?= ../shared
MODEL ?= models/stories260K.gguf
CMAKE_EXTRA ?=
MAAS := $(BUILD)/bin/maas

.PHONY: all deps configure build test test-asan serve model node-deps lint format fuzz clean

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_EXTRA) > /dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

# npm packages the tests use as references (pinned in tests/node/package-lock.json).
node-deps: deps
	@if [ -f tests/node/package-lock.json ]; then \
	  if [ ! -d tests/node/node_modules ] || [ tests/node/package-lock.json -nt tests/node/node_modules ]; then \
	    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error) && touch tests/node/node_modules; \
	  fi; \
	fi

# The suite, then a short real fuzzing run of every libFuzzer target (clang, ASan+UBSan).
FUZZ_SMOKE_SECONDS ?= 15
test: build node-deps
	@ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)
	@FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) bash scripts/fuzz.sh

test-asan: node-deps
	@$(MAKE) --no-print-directory build BUILD=build-asan BUILD_TYPE=RelWithDebInfo CMAKE_EXTRA=-DMAAS_SANITIZE=ON
	@ctest --test-dir build-asan --output-on-failure -j $(JOBS)

# The default model: stories260K from ../shared, converted to GGUF.
model: build
	@if [ -f $(MODEL) ]; then exit 0; fi; \
	if [ ! -f $(SHARED)/models/stories260K/stories260K.bin ]; then \
	  echo "No $(SHARED)/models/stories260K here. Point maas at any GGUF model instead:"; \
	  echo "  $(MAAS) run -m /path/to/model.gguf -p 'Hello'"; exit 1; \
	fi; \
	mkdir -p $(dir $(MODEL)) && \
	$(MAAS) convert llama2c $(SHARED)/models/stories260K/stories260K.bin \
	  $(SHARED)/models/stories260K/tok512.bin -o $(MODEL) && echo "wrote $(MODEL)"

# Until the HTTP server exists, serving means generating from the default model.
serve: model
	$(MAAS) serve -m $(MODEL) --host 127.0.0.1 --port 8080

lint: configure
	@run-clang-tidy -quiet -p $(BUILD) "$(CURDIR)/src/.*\.cpp$$"

format:
	@clang-format -i $$(git ls-files '*.cpp' '*.h')

fuzz:
	@bash scripts/fuzz.sh

clean:
	rm -rf build build-asan build-fuzz
