# The simulated domain backend.
noinst_LIBRARIES += stream/domain/sim/libfmsim.a
stream_domain_sim_libfmsim_a_SOURCES = \
	stream/domain/sim/sim.hpp \
	stream/domain/sim/sim_internal.hpp \
	stream/domain/sim/sim_control.hpp \
	stream/domain/sim/sim_content.hpp stream/domain/sim/sim_content.cpp \
	stream/domain/sim/sim_workload.hpp stream/domain/sim/sim_workload.cpp \
	stream/domain/sim/sim_state.hpp stream/domain/sim/sim_state.cpp \
	stream/domain/sim/sim_process.cpp \
	stream/domain/sim/sim_registry.cpp \
	stream/domain/sim/sim_domain.cpp
