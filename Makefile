# floodgate: `make demo` (sets up what is missing, builds, shows floodgate at work) and `make test`.
# Run as root on Debian/Ubuntu; `make deps` installs the system packages the build and tests need.

CARGO    ?= cargo
PREFIX   ?= /usr/local
DEB_PKGS := build-essential pkg-config libnftnl-dev libmnl-dev nftables iproute2 util-linux
DEMO_DIR := $(or $(TMPDIR),/tmp)/floodgate-demo

.PHONY: all build deps test lint bench demo install clean

all: build

build:
	$(CARGO) build --release

# Installs only the Debian packages that are missing; needs root (or sudo) when something is.
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs), then run make again"; exit 1; }

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

test: lint
	$(CARGO) test

bench:
	$(CARGO) bench

# The main job for now: parse the bundled real-format samples of every program, store them, and query the store.
demo: deps build
	@rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	@for f in tests/samples/*.txt; do grep -v -e '^=>' -e '^#' -e '^$$' $$f > $(DEMO_DIR)/$$(basename $$f .txt).log; done
	@echo "== floodgate parse: every bundled log format, events as text"
	./target/release/floodgate --db $(DEMO_DIR)/demo.db parse --save $(DEMO_DIR)/*.log | head -n 25
	@echo "   ..."
	@echo "== the same postfix log as JSON (first 3 events)"
	./target/release/floodgate parse --format json $(DEMO_DIR)/postfix.log 2>/dev/null | head -n 3
	@echo "== floodgate events: what the store now holds for 198.51.100.13"
	./target/release/floodgate --db $(DEMO_DIR)/demo.db events --addr 198.51.100.13
	@echo "== floodgate events: kernel SYN-flood lines (they name the listener, never the attacker)"
	./target/release/floodgate --db $(DEMO_DIR)/demo.db events --kind syn_flood --limit 5
	@rm -rf $(DEMO_DIR)

install: build
	install -D -m 0755 target/release/floodgate $(DESTDIR)$(PREFIX)/bin/floodgate
	install -D -m 0644 examples/floodgate.toml $(DESTDIR)/etc/floodgate/floodgate.toml.example

clean:
	$(CARGO) clean
