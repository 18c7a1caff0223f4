# snapcron: build, test and install. `make test` is the test command the README and CI use.
#
#   make install [PREFIX=/usr/local] [DESTDIR=]   release build, then install-files
#   make uninstall                                removes what install added; never /etc/snapcron or the state
# install-files installs already built binaries from BUILT (default the release build), for packaging and for
# the end-to-end tests, which install the debug build into a booted systemd sandbox with the same rule.
PREFIX ?= /usr/local
DESTDIR ?=
SWIFT ?= swift
STRIP ?= strip
BINDIR ?= $(PREFIX)/bin
# systemd reads units, sysusers.d and catalogs under /usr/local/lib as well as /usr/lib; with another PREFIX
# set these to systemd's own folders (e.g. UNITDIR=/etc/systemd/system SYSUSERSDIR=/etc/sysusers.d).
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
CATALOGDIR ?= $(PREFIX)/lib/systemd/catalog
DOCDIR ?= $(PREFIX)/share/doc/snapcron
CONFDIR ?= /etc/snapcron
BUILT ?= .build/release
BINARIES = snapcrond snapcronctl
# Post-install steps run only for a real install on a machine whose PID 1 is systemd (sd_booted(3)).
LIVE = $(if $(DESTDIR),,$(if $(wildcard /run/systemd/system),yes))

.PHONY: all build test bench demo deps test-deps clean release install install-files uninstall

all: build

deps:
	scripts/install-deps

# The tests also need libvirtd and QEMU (a real guest for the libvirt backend), and Prometheus (promtool).
test-deps:
	scripts/install-deps --tests

build: deps
	$(SWIFT) build

# Two passes of their own after the rest: the TWCC backend's tests, whose stand-in API answers within request
# timeouts of 300 ms (on two cores shared with 500 other tests and a PostgreSQL, a sound request could miss that),
# and a real QEMU guest under TCG, which takes both cores.
test: test-deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --skip LibvirtQemuGuestTests --skip TWCCBackendTests
	$(SWIFT) test --skip-build --filter TWCCBackendTests
	$(SWIFT) test --skip-build --filter LibvirtQemuGuestTests

demo:
	scripts/demo

bench:
	$(SWIFT) run -c release --package-path Benchmarks cron-bench Benchmarks/expressions.tsv

# Self-contained binaries: the Swift runtime linked in, only glibc, libsqlite3 and libsystemd from the system
# (snapcrond loads libvirt0 when a libvirt backend is first used).
release: deps
	for product in $(BINARIES); do \
		$(SWIFT) build -c release --static-swift-stdlib --product $$product || exit 1; \
	done

install: release
	$(MAKE) install-files

install-files:
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(CATALOGDIR) \
		$(DESTDIR)$(DOCDIR)/examples/exec $(DESTDIR)$(CONFDIR)
	for binary in $(BINARIES); do \
		install -m 0755 $(BUILT)/$$binary $(DESTDIR)$(BINDIR)/$$binary.new && \
		$(STRIP) $(DESTDIR)$(BINDIR)/$$binary.new && \
		mv -f $(DESTDIR)$(BINDIR)/$$binary.new $(DESTDIR)$(BINDIR)/$$binary || exit 1; \
	done
	sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/usr/local/share/doc/snapcron/|$(DOCDIR)/|g' \
		systemd/snapcron.service >$(DESTDIR)$(UNITDIR)/snapcron.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/snapcron.service
	install -m 0644 systemd/snapcron.sysusers $(DESTDIR)$(SYSUSERSDIR)/snapcron.conf
	sed -e 's|/usr/share/doc/snapcron/|$(DOCDIR)/|g' systemd/snapcron.catalog >$(DESTDIR)$(CATALOGDIR)/snapcron.catalog
	chmod 0644 $(DESTDIR)$(CATALOGDIR)/snapcron.catalog
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 etc/snapcron.toml etc/schedule etc/snapcron.exec-qemu.toml etc/schedule.exec-qemu \
		$(DESTDIR)$(DOCDIR)/examples/
	install -m 0755 etc/exec/qemu-snapshot $(DESTDIR)$(DOCDIR)/examples/exec/
	# The example config and schedule, never over the operator's own. The schedule's demo job (every minute,
	# on a disk under /var/tmp, which the service cannot see) is commented out: the schedule starts empty.
	if [ ! -e $(DESTDIR)$(CONFDIR)/snapcron.toml ]; then \
		install -m 0644 etc/snapcron.toml $(DESTDIR)$(CONFDIR)/snapcron.toml; \
	else echo "keeping $(DESTDIR)$(CONFDIR)/snapcron.toml"; fi
	if [ ! -e $(DESTDIR)$(CONFDIR)/schedule ]; then \
		sed -e 's|^\(\* \* \* \* \* .*demo .*\)$$|# \1|' etc/schedule >$(DESTDIR)$(CONFDIR)/schedule && \
		chmod 0644 $(DESTDIR)$(CONFDIR)/schedule; \
	else echo "keeping $(DESTDIR)$(CONFDIR)/schedule"; fi
ifeq ($(LIVE),yes)
	systemd-sysusers $(SYSUSERSDIR)/snapcron.conf
	journalctl --update-catalog
	systemctl daemon-reload
	@echo "installed; start with: systemctl enable --now snapcron (restart it after an upgrade)"
endif

uninstall:
ifeq ($(LIVE),yes)
	-systemctl disable --now snapcron.service
endif
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(BINARIES)) $(DESTDIR)$(UNITDIR)/snapcron.service \
		$(DESTDIR)$(SYSUSERSDIR)/snapcron.conf $(DESTDIR)$(CATALOGDIR)/snapcron.catalog
	rm -rf $(DESTDIR)$(DOCDIR)
ifeq ($(LIVE),yes)
	journalctl --update-catalog
	systemctl daemon-reload
endif
	@echo "kept $(CONFDIR) (config), /var/lib/snapcron (state, images) and the snapcron user: remove them by hand"

clean:
	rm -rf .build Benchmarks/.build
