// A stand-in for `fastmig sim serve ...` in unit tests that must not depend
// on the command line: sim processes are exec'd as
//   $FASTMIG_BIN sim serve --id N ...
// and this program hands those arguments to sim::serve_main.
#include "stream/domain/sim/sim.hpp"

int main(int argc, char** argv) { return fastmig::sim::serve_main(argc - 1, argv + 1); }
