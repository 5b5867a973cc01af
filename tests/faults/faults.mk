# Fault matrix (tests/faults/README.md): the real fastmig in two network
# namespaces, one injected fault per run.  A short version runs in
# `make check`; `make faults` runs every case FAULTS_REPS times (3: 93 faults).
TESTS += tests/faults/short.sh
EXTRA_DIST += tests/faults/short.sh tests/faults/faults.py tests/faults/relay.py tests/faults/README.md
FAULTS_REPS = 3
FAULTS_ARGS =
faults: fastmig$(EXEEXT)
	python3 $(srcdir)/tests/faults/faults.py --bin $(abs_top_builddir)/fastmig$(EXEEXT) --reps $(FAULTS_REPS) $(FAULTS_ARGS)
.PHONY: faults
# The soak (tests/faults/README.md, Soak): one busy guest migrated back and
# forth SOAK_MIGRATIONS times, a fault every tenth.  Not in `make check`.
EXTRA_DIST += tests/faults/soak.py
SOAK_MIGRATIONS = 100
SOAK_ARGS =
soak: fastmig$(EXEEXT)
	python3 $(srcdir)/tests/faults/soak.py --bin $(abs_top_builddir)/fastmig$(EXEEXT) --migrations $(SOAK_MIGRATIONS) $(SOAK_ARGS)
.PHONY: soak
