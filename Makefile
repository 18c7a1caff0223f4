# snapcron: build, test and install. `make test` is the test command the README and CI use.
PREFIX ?= /usr/local
SWIFT ?= swift

.PHONY: all build test bench demo deps clean

all: build

deps:
	scripts/install-deps

build: deps
	$(SWIFT) build

test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

demo:
	scripts/demo

bench:
	$(SWIFT) run -c release --package-path Benchmarks cron-bench Benchmarks/expressions.tsv

clean:
	rm -rf .build Benchmarks/.build
