# Fault matrix (tests/faults/README.md): the real fastmig in two network
# namespaces, one injected fault per run.  A short version runs in
# `make check`; `make faults` runs every case FAULTS_REPS times (3: 66 faults).
TESTS += tests/faults/short.sh
EXTRA_DIST += tests/faults/short.sh tests/faults/faults.py tests/faults/relay.py tests/faults/README.md
FAULTS_REPS = 3
FAULTS_ARGS =
faults: fastmig$(EXEEXT)
	python3 $(srcdir)/tests/faults/faults.py --bin $(abs_top_builddir)/fastmig$(EXEEXT) --reps $(FAULTS_REPS) $(FAULTS_ARGS)
.PHONY: faults
