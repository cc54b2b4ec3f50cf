# Thin wrapper around CMake. Every target that builds first makes sure the Debian packages are
# there (scripts/deps.sh is quiet and quick when nothing is missing). `make` and `make demo` need
# only the core packages (the tests are built once `make test` has installed cmocka);
# `make test` installs the test packages too.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD ?= build
ASAN_BUILD ?= build-asan
CMAKE_FLAGS ?=
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: all deps build test test-release test-asan demo install bench fuzz clean

all: build

deps:
	@bash scripts/deps.sh core

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

test: deps
	@$(MAKE) --no-print-directory test-release
	@$(MAKE) --no-print-directory test-asan

test-release: deps
	@bash scripts/deps.sh test
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTS=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan: deps
	@bash scripts/deps.sh test
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSL_SANITIZE=ON -DBUILD_TESTS=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && SL_SANITIZED=1 ctest --output-on-failure -j $(JOBS)

demo: build
	@bash scripts/demo.sh $(BUILD)/shoplens

# The CLI, libshoplens.so/.a, the headers, shoplens.pc and the man page under $(DESTDIR)$(PREFIX)
# (see cmake/install.cmake). ldconfig makes a new libshoplens.so.N found at once.
install: build
	@cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	@DESTDIR="$(DESTDIR)" cmake --install $(BUILD)
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

bench: deps
	@bash scripts/deps.sh bench
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DBUILD_BENCH=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@bash bench/run.sh $(BUILD)

fuzz: deps
	@bash scripts/deps.sh test
	@CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DSL_FUZZ=ON -DBUILD_TESTS=ON -DSL_WERROR=OFF >/dev/null
	@cmake --build build-fuzz -j $(JOBS)
	@echo "fuzzers built in build-fuzz/ (run e.g. build-fuzz/fuzz_image tests/fuzz/corpus/fuzz_image)"

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
