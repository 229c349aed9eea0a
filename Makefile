# floodgate: `make demo` (sets up what is missing, builds, shows floodgate at work) and `make test`.
# Run as root on Debian/Ubuntu; `make deps` installs the system packages the build and tests need.

CARGO    ?= cargo
PREFIX   ?= /usr/local
DEB_PKGS := build-essential pkg-config libnftnl-dev libmnl-dev nftables iproute2 util-linux conntrack procps
DEMO_DIR := $(or $(TMPDIR),/tmp)/floodgate-demo
# Where cargo builds: CARGO_TARGET_DIR when set (install and deb take the binary from there).
TARGET_DIR := $(abspath $(or $(CARGO_TARGET_DIR),target))

MAIL_PKGS := postfix dovecot-core dovecot-imapd dovecot-pop3d hydra openssh-server nats-server
# fail2ban only for `make bench` (fail2ban-regex side by side with floodgate parse); its server is never started.
BENCH_PKGS := fail2ban

.PHONY: all build deps mail-deps bench-deps test lint bench demo demo-enforce demo-mail install deb deb-check clean

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

# Postfix and Dovecot for the mail scenario, installed without ever running them on this machine: the scenario
# starts private instances inside network namespaces. A policy-rc.d that exits 101 keeps apt from starting them
# (removed afterwards unless it was already there), debconf answers Postfix's questions (a local-only mailer),
# and the units the packages enabled are disabled again, so they do not start at the next boot either.
mail-deps:
	@missing=""; for p in $(MAIL_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing (not starting):$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); own_policy=; \
		if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' | $$SUDO tee /usr/sbin/policy-rc.d >/dev/null && $$SUDO chmod 0755 /usr/sbin/policy-rc.d && own_policy=1; \
		fi; \
		printf 'postfix postfix/main_mailer_type select Local only\npostfix postfix/mailname string mx.example.test\n' | $$SUDO debconf-set-selections; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; rc=$$?; \
		[ -z "$$own_policy" ] || $$SUDO rm -f /usr/sbin/policy-rc.d; \
		if [ -d /run/systemd/system ]; then $$SUDO systemctl disable --quiet postfix dovecot ssh nats-server 2>/dev/null || true; fi; \
		exit $$rc; \
	fi

bench-deps:
	@$(MAKE) --no-print-directory mail-deps MAIL_PKGS="$(BENCH_PKGS)"
	@if [ -d /run/systemd/system ]; then SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO systemctl disable --now --quiet fail2ban 2>/dev/null || true; fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Kernel suites (tests/*_netns.rs) skip where they cannot run (not root, no nftables, no Postfix...): each
# skipped test prints a banner and appends a line to SKIP_LOG (tests/lab/src/skip.rs), which is cleared here
# before the run and counted after it, so that a green run with kernel suites skipped says so at the end. Under
# CI=true a skip fails the test instead.
SKIP_LOG := $(TARGET_DIR)/skipped-kernel-tests.txt

test: lint
	@mkdir -p $(dir $(SKIP_LOG)) && rm -f $(SKIP_LOG)
	@echo "$(CARGO) test"; FLOODGATE_SKIP_LOG=$(SKIP_LOG) $(CARGO) test; rc=$$?; \
	if [ -s $(SKIP_LOG) ]; then \
		echo "== SKIPPED: $$(wc -l < $(SKIP_LOG)) kernel tests in $$(cut -f1 $(SKIP_LOG) | sort -u | wc -l) suites did NOT run:"; \
		cut -f1,3 $(SKIP_LOG) | sort | uniq -c | sed 's/^/     /'; \
		echo "   (run \`make test\` as root after \`make deps mail-deps\`; the list: $(SKIP_LOG))"; \
	else echo "== kernel suites: none skipped"; fi; \
	exit $$rc

bench: bench-deps
	$(CARGO) bench

# Parse the bundled real-format samples of every program, store them and query the store; as root, enforcement in
# a throwaway namespace (demo-enforce) and the mail scenario against real Postfix and Dovecot (demo-mail, after
# mail-deps installs them without starting them on this machine).
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
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory demo-enforce; \
	else echo "== enforcement demo skipped: it needs root (it runs in a throwaway network namespace)"; fi
	@rm -rf $(DEMO_DIR)
	@if [ "$$(id -u)" != 0 ]; then \
		echo "== mail scenario skipped: it needs root (network namespaces, Postfix and Dovecot run inside them)"; \
	elif $(MAKE) --no-print-directory mail-deps; then $(MAKE) --no-print-directory demo-mail; \
	else echo "== mail scenario skipped: Postfix and Dovecot are not installed and could not be (see above; make mail-deps)"; fi

# Enforcement in a throwaway network namespace: the host's own ruleset is never touched.
DEMO_NS := floodgate-demo-$$PPID
FG      := ip netns exec $(DEMO_NS) ./target/release/floodgate --db $(DEMO_DIR)/demo.db
demo-enforce:
	@ip netns add $(DEMO_NS)
	@trap 'ip netns del $(DEMO_NS)' EXIT; set -e; \
	echo "== floodgate allow / block / limit: decisions recorded in the store and written to the kernel in one batch"; \
	$(FG) allow add 203.0.113.10 --comment "the admin's address"; \
	$(FG) block 198.51.100.13 203.0.113.0/24 2001:db8:1::/64 --for 1h --reason "demo: brute force"; \
	$(FG) block 203.0.113.10 || echo "   (refused, as it should be: the admin is allowlisted)"; \
	awk 'BEGIN { for (i = 0; i < 10000; i++) printf "198.18.%d.%d\n", i / 256, i % 256 }' > $(DEMO_DIR)/blocklist.txt; \
	echo "== a 10,000-line blocklist in one batch"; \
	time -p $(FG) block --file $(DEMO_DIR)/blocklist.txt --for 10m --reason "demo: blocklist"; \
	$(FG) limit global 25 --for 5m --reason "demo: too many sources to narrow down"; \
	echo "== floodgate list (read from the kernel, joined with the store)"; \
	$(FG) list | grep -v '^198\.18\.' ; \
	echo "== nft list table inet floodgate (first lines)"; \
	ip netns exec $(DEMO_NS) nft list table inet floodgate | grep -v -e '^\s*$$' | sed -n '1,24p' | cut -c1-150; \
	echo "== a flush loses nothing: floodgate reconcile restores the table from the store"; \
	ip netns exec $(DEMO_NS) nft delete table inet floodgate; \
	$(FG) reconcile; \
	$(FG) unblock --all; \
	$(FG) list; \
	echo "== floodgate run: the daemon tails a mail log and bans a password guesser (3 failures within 10m)"; \
	printf 'allowlist = ["203.0.113.10"]\n[sources]\nfiles = ["$(DEMO_DIR)/mail.log"]\nkmsg = false\nnetstat = false\n[daemon]\nsocket = "$(DEMO_DIR)/fg.sock"\n[services.imap]\nports = [143, 993]\nmaxretry = 3\n' > $(DEMO_DIR)/run.toml; \
	: > $(DEMO_DIR)/mail.log; \
	ip netns exec $(DEMO_NS) ./target/release/floodgate --config $(DEMO_DIR)/run.toml --db $(DEMO_DIR)/demo.db run 2> $(DEMO_DIR)/daemon.log & pid=$$!; \
	for i in $$(seq 50); do [ -S $(DEMO_DIR)/fg.sock ] && break; sleep 0.1; done; \
	for n in 1 2 3; do \
		echo "$$(date -u +%Y-%m-%dT%H:%M:%S+00:00) mx dovecot[812]: imap-login: Info: Disconnected: Aborted login (auth failed, 1 attempts in 2 secs): user=<admin>, method=PLAIN, rip=198.51.100.66, lip=198.51.100.1, session=<s$$n>" >> $(DEMO_DIR)/mail.log; \
	done; \
	sleep 1; \
	ip netns exec $(DEMO_NS) ./target/release/floodgate --config $(DEMO_DIR)/run.toml status; \
	ip netns exec $(DEMO_NS) ./target/release/floodgate --config $(DEMO_DIR)/run.toml list; \
	ip netns exec $(DEMO_NS) nft list set inet floodgate ban4; \
	kill -TERM $$pid; wait $$pid; \
	echo "== the daemon stopped (SIGTERM); its ban stays in the kernel with its timeout"; \
	grep -h "banned" $(DEMO_DIR)/daemon.log | cut -c1-200; \
	echo "== country-restricted ports: IMAP only from JP (a two-record RIR file stands in for the registries' files)"; \
	printf '2.3|demo|20261121|2|19830101|20261120|+0000\ndemo|*|ipv4|*|2|summary\napnic|JP|ipv4|203.0.113.0|256|20100101|allocated\nripencc|DE|ipv4|198.18.0.0|131072|20100101|allocated\n' > $(DEMO_DIR)/delegated-demo; \
	printf 'allowlist = ["203.0.113.10"]\n[services.smtp]\nports = [25]\n[services.imap]\nports = [143, 993]\ncountries = ["JP"]\n[geo]\ndir = "$(DEMO_DIR)/geo"\nsources = [{ url = "file://$(DEMO_DIR)/delegated-demo" }]\n' > $(DEMO_DIR)/geo.toml; \
	$(FG) --config $(DEMO_DIR)/geo.toml geo update; \
	$(FG) --config $(DEMO_DIR)/geo.toml geo lookup 198.18.7.7; \
	ip netns exec $(DEMO_NS) nft list chain inet floodgate prerouting | grep geo; \
	echo "== floodgate advise: what this (fresh) network namespace should tune against SYN floods"; \
	$(FG) advise | head -n 30

# The mail scenario (issue 8) as a demo: real Postfix and Dovecot in a server namespace, an attacker and an admin
# namespace, floodgate run on the real logs; the five steps (a password guesser, a DoS source, a spoofed SYN flood
# on 25 and 587, convergence, floodgate advise) narrated with floodgate status, list, events and advise. It is the
# very test `make test` runs (tests/mail_netns.rs), shown as it goes; built in release mode to reuse `make build`.
# Root only; about 30 s once built; everything (namespaces, servers, files) is torn down at the end.
demo-mail: deps mail-deps
	@[ "$$(id -u)" = 0 ] || { echo "demo-mail needs root: it creates network namespaces and runs Postfix and Dovecot in them"; exit 1; }
	@echo "== the mail scenario: real Postfix and Dovecot, floodgate run, five attacks and what floodgate did (tests/mail_netns.rs)"
	$(CARGO) test --release --test mail_netns -- --exact the_mail_server_scenario --nocapture

# The units name the package's paths (/usr/bin, /usr/share/doc); a PREFIX install rewrites them to its own.
UNIT_PATHS := s|/usr/bin/floodgate|$(PREFIX)/bin/floodgate|g; s|/usr/share/doc/floodgate|$(PREFIX)/share/doc/floodgate|g
install: build
	install -D -m 0755 $(TARGET_DIR)/release/floodgate $(DESTDIR)$(PREFIX)/bin/floodgate
	install -D -m 0644 examples/floodgate.toml $(DESTDIR)/etc/floodgate/floodgate.toml.example
	install -d $(DESTDIR)/lib/systemd/system
	sed "$(UNIT_PATHS)" examples/floodgate.service > $(DESTDIR)/lib/systemd/system/floodgate.service
	sed "$(UNIT_PATHS)" examples/floodgate-geo-update.service > $(DESTDIR)/lib/systemd/system/floodgate-geo-update.service
	install -m 0644 examples/floodgate-geo-update.timer $(DESTDIR)/lib/systemd/system/floodgate-geo-update.timer
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/floodgate/README.md
	@echo "installed; enable with: systemctl daemon-reload && systemctl enable --now floodgate"

# The Debian package (cargo-deb; what goes in it: [package.metadata.deb] in Cargo.toml, maintainer scripts in
# debian/). The man pages, completions and the packaged config come from the release binary itself (`floodgate
# generate`, hidden), written under the target directory where the assets list expects them, so the package
# ships exactly what this binary says; man pages gzipped (-n: no timestamp) as Debian wants them. --strip: the
# release profile keeps line tables for developers' backtraces, the package ships the stripped binary (lintian).
# cargo-deb comes from crates.io the first time.
DEB_ASSETS := $(TARGET_DIR)/release/deb-assets
deb: build
	@command -v cargo-deb >/dev/null || $(CARGO) install cargo-deb --locked
	rm -rf $(DEB_ASSETS)
	$(TARGET_DIR)/release/floodgate generate man $(DEB_ASSETS)/man
	gzip -9n $(DEB_ASSETS)/man/*
	$(TARGET_DIR)/release/floodgate generate completions $(DEB_ASSETS)/completions
	$(TARGET_DIR)/release/floodgate generate config $(DEB_ASSETS)/floodgate.toml
	$(CARGO) deb --no-build --strip
	@ls -l $(TARGET_DIR)/debian/floodgate_*.deb

# Installs the package on this machine, uses it as an operator would, purges it and checks nothing is left (root;
# refuses where floodgate is already installed). CI runs it after `make test`.
deb-check: deb
	.ci/deb-check $(TARGET_DIR)/debian

clean:
	$(CARGO) clean
