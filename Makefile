# liveupdate: the module, its Python tooling and its tests.
#
#   make demo    boot the test guest, preserve a memfd, kexec, show it survived
#   make check   every test: unit tests on the host, then the guest plans
#   make module  build kernel/liveupdate.ko (KDIR=<your KHO kernel build>)
#   make bench   the same live updates on our module and on mainline's LUO
#   make bench-fs  1 GiB in a liveupdatefs file against 1 GiB in a memfd
#   make deb     the Debian packages liveupdate-dkms and python3-liveupdate
#
# Installs what is missing (Debian/Ubuntu packages, as root), fetches
# Debian's linux-source-7.2 and builds the guest kernels once into
# $(CACHE); later runs reuse them. Three kernels from one source: the
# lean one (demo, benchmark), the debug one (every test plan: KASAN,
# kmemleak, lockdep, fault injection) and mainline's LUO (benchmark).
# The module is built twice outside the tree: for the lean kernel as
# users get it (build/module), and for the debug kernel with the test
# hooks (build/module-debug, LU_DEBUG=y).

CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/liveupdate
export LIVEUPDATE_CACHE := $(CACHE)
PYTHON ?= python3
APT_PACKAGES := qemu-system-x86 kexec-tools busybox-static flex bison bc \
	libelf-dev libssl-dev xz-utils kmod gcc make python3-venv e2fsprogs \
	debootstrap dkms dpkg-dev rsync cpio qemu-utils zstd
# `make deb` builds in a Debian sid root (qemu/debian-root.sh, cached)
# with these: sid's packaging tools, for the release the packages target.
DEB_VERSION := $(shell sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' debian/changelog)
DEB_ROOT_PACKAGES := build-essential debhelper dh-dkms dkms dh-python \
	pybuild-plugin-pyproject python3-all python3-setuptools lintian
PY_PACKAGES := pytest ruff mypy pyroute2 ruamel.yaml 'setuptools>=77' wheel
VENV := $(CACHE)/venv-$(shell echo $(PY_PACKAGES) | sha256sum | cut -c1-8)
VPY := $(VENV)/bin/python
RUN := $(VPY) qemu/run.py

# The guest kernel's build directory, once built into the cache.
KDIR_FILE := build/kdir
GUEST_KSRC = $$(readlink -f $$(cat $(KDIR_FILE))/source)

# The benchmark's second kernel: the same source and fragment with
# mainline's LUO on (qemu/mainline-luo.config), cached the same way.
MAINLINE_FRAGMENT := build/kernel-mainline.config
MAINLINE_KDIR_FILE := build/kdir-mainline

# The tests' kernel: the same fragment plus qemu/debug.config. KASAN's
# early reservations need a larger KHO scratch area than the default, and
# ACPI's AML interpreter runs so slowly there that each PCI IRQ routing
# (_PRT) evaluation hits its 30 s loop timeout: route PCI IRQs without it.
# (acpi=off would save 8 s of each boot, but the guest then finds one CPU
# only, and the tests need two.)
# With 5-level paging (QEMU's -cpu max), a kexec'd KASAN kernel once took
# an early interrupt whose descriptor KASAN called a wild access: 4 levels.
DEBUG_FRAGMENT := build/kernel-debug.config
DEBUG_KDIR_FILE := build/kdir-debug
DEBUG_APPEND := kho_scratch=32M,512M,128M pci=noacpi no5lvl

MODULE := build/module/liveupdate.ko
DEBUG_MODULE := build/module-debug/liveupdate.ko

# The longest plans start first, longest first (as measured in make
# check), so that both lanes of make guest end at about the same time.
LONG_PLANS := $(addprefix selftests/plans/,agent_py.plan damaged_c.plan fs_py.plan \
	systemd_py.plan one_kernel_c.plan integrity_c.plan systemd_services_py.plan cli_py.plan)
PLANS := $(LONG_PLANS) \
	$(filter-out $(LONG_PLANS),$(sort $(wildcard selftests/plans/*.plan)))
# make bench BENCH_ARGS="--sizes 64M,1G --files 1 --repeats 5"
BENCH_ARGS ?=
BENCH = $(VPY) bench/run.py --python $(VPY) --module $(MODULE) \
	--ours $$(cat $(KDIR_FILE))/arch/x86/boot/bzImage \
	--mainline $$(cat $(MAINLINE_KDIR_FILE))/arch/x86/boot/bzImage

.PHONY: all deps deb packages systemd-image venv kernel kernel-mainline kernel-debug module module-debug \
	selftests unit guest bench bench-smoke bench-fs check demo clean

all: module selftests

deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "[deps] installing:" $$missing; \
		apt-get update -q >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(VPY)
$(VPY):
	@echo "[venv] creating $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q $(PY_PACKAGES)

$(KDIR_FILE): qemu/kernel.config qemu/build-kernel.sh qemu/fetch-source.sh | deps
	@mkdir -p build
	qemu/build-kernel.sh > $@.tmp && mv $@.tmp $@

kernel: $(KDIR_FILE)

$(MAINLINE_FRAGMENT): qemu/kernel.config qemu/mainline-luo.config
	@mkdir -p build
	{ grep -vx '# CONFIG_LIVEUPDATE is not set' qemu/kernel.config; \
	  cat qemu/mainline-luo.config; } > $@

# Built from a copy of the lean kernel's build: only what differs is compiled.
$(MAINLINE_KDIR_FILE): $(MAINLINE_FRAGMENT) qemu/build-kernel.sh qemu/fetch-source.sh $(KDIR_FILE) | deps
	KERNEL_FRAGMENT=$(abspath $(MAINLINE_FRAGMENT)) KERNEL_BASE=$$(cat $(KDIR_FILE)) \
		qemu/build-kernel.sh > $@.tmp && mv $@.tmp $@

kernel-mainline: $(MAINLINE_KDIR_FILE)

# The overlay's lines override the lean kernel's: where both set an
# option, only the overlay's line is kept (build-kernel.sh checks each).
$(DEBUG_FRAGMENT): qemu/kernel.config qemu/debug.config
	@mkdir -p build
	cat qemu/kernel.config qemu/debug.config | awk '\
		{ opt = "" } /^CONFIG_/ { opt = $$0; sub(/=.*/, "", opt) } \
		/^# CONFIG_.* is not set$$/ { opt = $$2 } \
		{ text[NR] = $$0; name[NR] = opt; if (opt != "") last[opt] = NR } \
		END { for (i = 1; i <= NR; i++) if (name[i] == "" || last[name[i]] == i) print text[i] }' > $@

$(DEBUG_KDIR_FILE): $(DEBUG_FRAGMENT) qemu/build-kernel.sh qemu/fetch-source.sh | deps
	KERNEL_FRAGMENT=$(abspath $(DEBUG_FRAGMENT)) qemu/build-kernel.sh > $@.tmp && mv $@.tmp $@

kernel-debug: $(DEBUG_KDIR_FILE)

ifeq ($(origin KDIR),command line)
module:
	$(MAKE) -C kernel KDIR=$(KDIR)
else
module: kernel
	$(MAKE) -C kernel KDIR=$$(cat $(KDIR_FILE)) MO=$(abspath $(dir $(MODULE)))
endif

module-debug: kernel-debug
	$(MAKE) -C kernel KDIR=$$(cat $(DEBUG_KDIR_FILE)) \
		MO=$(abspath $(dir $(DEBUG_MODULE))) LU_DEBUG=y

selftests: kernel
	$(MAKE) -C selftests KSRC=$(GUEST_KSRC)
	$(MAKE) -C bench
	$(MAKE) -s -C $(GUEST_KSRC) O=$$(cat $(KDIR_FILE)) headers
	@mkdir -p build/mainline-selftests
	$(MAKE) -C $(GUEST_KSRC)/tools/testing/selftests/liveupdate \
		OUTPUT=$(abspath build/mainline-selftests) \
		KHDR_INCLUDES=-I$$(cat $(KDIR_FILE))/usr/include all

unit: venv kernel
	$(VPY) -m ruff check python qemu selftests bench
	cd python && $(VPY) -m mypy
	LU_KSRC=$(GUEST_KSRC) PYTHONPATH=python $(VPY) -m pytest -q python/tests

# What a failed plan said about its failure, repeated at the end, where a
# CI log's tail shows it.
FAILURE_RE = not ok|Test terminated|Test failed|Expected|Assertion|^\[ *[0-9.]+\] (E  |FAILED|ERROR)|RESULT [1-9]|WARNING:|BUG:|Oops|LU-GUEST kmemleak: |blocked for|run.py: .*(FAIL|timeout|no next stage)|run.py:   (CPU|  stack)|task:.* state:D

# Plans run GUEST_JOBS at a time (a TCG guest keeps about one core busy),
# each printing its own summary; the last line counts them. (Three on two
# cores took longer: 23.8 min against 21.6, with 16 % more CPU time.)
GUEST_JOBS ?= 2
# A smaller guest boots and scans for leaks faster: each stage of a
# plan took about 4 s less at 1.5 GiB than at 2 GiB (boot 2.8 s, the
# kmemleak scan 1.3 s). Plans whose memfds hold hundreds of MiB twice
# (before and after the restore) ask for 2 GiB ("# guest memory: 2G").
GUEST_MEM ?= 1536M
# A plan with the line "# guest kernel: lean" runs on the lean kernel with
# the production module instead (run.py; scale_c: the debug kernel does
# not come back from a kexec that carries tens of thousands of files).
guest: module-debug module selftests venv systemd-image
	@mkdir -p build/runs
	@printf '%s\n' $(PLANS) | xargs -P $(GUEST_JOBS) -I{} sh -c '\
		name=$$(basename {} .plan); \
		$(RUN) --quiet --kernel $$(cat $(DEBUG_KDIR_FILE))/arch/x86/boot/bzImage \
			--append "$(DEBUG_APPEND)" --module $(DEBUG_MODULE) \
			--lean-kernel $$(cat $(KDIR_FILE))/arch/x86/boot/bzImage --lean-module $(MODULE) \
			--systemd-image $$(cat $(SYSTEMD_IMAGE_FILE)) \
			--python $(VPY) --mem $(GUEST_MEM) --timeout 1800 \
			--out build/runs/$$name {} > build/runs/$$name.txt 2>&1; \
		echo $$? > build/runs/$$name.rc; \
		grep -v "^run.py: \[" build/runs/$$name.txt | grep "^run.py: \|^\[" | head -n 100'
	@failed=0; for plan in $(PLANS); do \
		name=$$(basename $$plan .plan); \
		[ "$$(cat build/runs/$$name.rc)" != 0 ] || continue; \
		failed=$$((failed + 1)); \
		grep -E "$(FAILURE_RE)" build/runs/$$name/serial.log build/runs/$$name.txt \
			| head -n 30 | sed "s|^build/runs/||"; \
	done; \
	echo "guest: $$(( $(words $(PLANS)) - failed )) passed, $$failed failed"; \
	[ $$failed = 0 ]

# Every run boots one kernel per variant, size and repeat (about 25 min).
bench: module selftests venv kernel-mainline
	@$(VPY) -c 'import matplotlib' 2>/dev/null || $(VPY) -m pip install -q matplotlib || \
		echo "[bench] matplotlib could not be installed: no plot"
	$(BENCH) --results bench/results $(BENCH_ARGS)

# The smallest point once per kernel, checked for sanity, results kept out of the tree.
bench-smoke: module selftests venv kernel-mainline
	$(BENCH) --sizes 64M --files 1 --repeats 1 --check --results build/bench-smoke

# liveupdatefs against memfds, 1 GiB each (bench/fs_vs_memfd.py): preserve
# and restore times, on the lean kernel.
bench-fs: module venv kernel
	@$(RUN) --quiet --kernel $$(cat $(KDIR_FILE))/arch/x86/boot/bzImage --module $(MODULE) \
		--python $(VPY) --timeout 1200 --out build/runs/bench-fs bench/fs_vs_memfd.plan
	@grep -a "LU-FSBENCH" build/runs/bench-fs/serial.log

# The Debian packages (debian/): liveupdate-dkms and python3-liveupdate,
# built in a sid root from what git tracks or would track; lintian must
# find no error. They land in build/.
deb: | deps
	@root=$$(qemu/debian-root.sh deb-build $(DEB_ROOT_PACKAGES)) && \
	rm -rf $$root/build && mkdir -p $$root/build/src && \
	git ls-files -co --exclude-standard debian kernel python systemd boot README.md | \
		tar -cf - -T - | tar -xf - -C $$root/build/src && \
	echo "[deb] dpkg-buildpackage (log: build/deb.log)" && mkdir -p build && \
	{ chroot $$root sh -c 'cd /build/src && dpkg-buildpackage -us -uc -b' > build/deb.log 2>&1 || \
		{ tail -n 30 build/deb.log; exit 1; }; } && \
	chroot $$root sh -c 'lintian --fail-on error /build/*.changes' && \
	cp $$root/build/*.deb build/ && ls build/*.deb

# The systemd guest (plans with "# guest: systemd"): the lean kernel as
# Debian packages, and a sid root with them and ours installed.
KERNEL_DEBS_FILE := build/kernel-debs
SYSTEMD_IMAGE_FILE := build/systemd-image

$(KERNEL_DEBS_FILE): $(KDIR_FILE) qemu/kernel-debs.sh | deps
	qemu/kernel-debs.sh $$(cat $(KDIR_FILE)) > $@.tmp && mv $@.tmp $@

systemd-image: deb $(KERNEL_DEBS_FILE)
	qemu/systemd-image.sh $$(cat $(KERNEL_DEBS_FILE)) build/liveupdate-dkms_$(DEB_VERSION)_all.deb \
		build/python3-liveupdate_$(DEB_VERSION)_all.deb > $(SYSTEMD_IMAGE_FILE).tmp && \
		mv $(SYSTEMD_IMAGE_FILE).tmp $(SYSTEMD_IMAGE_FILE)

# The packages as a host takes them: DKMS builds the module for the lean
# kernel and skips a kernel without KHO or with mainline's LUO.
packages: deb kernel
	qemu/check-dkms.sh $$(cat $(KDIR_FILE)) build/liveupdate-dkms_$(DEB_VERSION)_all.deb

check: unit packages guest bench-smoke

demo: module venv
	$(RUN) --kernel $$(cat $(KDIR_FILE))/arch/x86/boot/bzImage \
		--module $(MODULE) --python $(VPY) \
		--out build/runs/demo qemu/demo.plan

clean:
	$(MAKE) -C selftests clean
	$(MAKE) -C bench clean
	-$(MAKE) -C kernel KDIR=$$(cat $(KDIR_FILE)) clean
	rm -rf build
