# The fastmig command (and, later, the libxl-save-helper drop-in).
bin_PROGRAMS += fastmig
fastmig_SOURCES = \
	libxl-plugin/fastmig_main.cpp \
	libxl-plugin/cli.hpp libxl-plugin/cli.cpp \
	libxl-plugin/report.hpp libxl-plugin/report.cpp \
	libxl-plugin/netns.hpp libxl-plugin/netns.cpp \
	libxl-plugin/cmd_migrate.cpp \
	libxl-plugin/cmd_sim.cpp
fastmig_LDADD = $(FASTMIG_LIBS)
