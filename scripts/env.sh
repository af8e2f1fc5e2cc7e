# Sourced by the scripts: one shared build directory, so DuckDB's bundled C++ (40-80 minutes
# on two cores) is compiled once per machine rather than once per clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kompactor-target}"
