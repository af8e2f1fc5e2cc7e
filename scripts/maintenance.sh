#!/bin/sh
# An example of running the maintenance window from cron or a systemd timer: every setting in
# the environment (or in a file sourced first), one `kompactor maintain` run, its exit status
# passed on. The routine itself is `kompactor maintain --help`.
#
#   KOMPACTOR_ENV=/etc/kompactor/maintenance.env scripts/maintenance.sh
#
# with, in that file for example:
#   DATA_DIR=/var/lib/influxdb3
#   HOSTS=node0
#   SYSTEMD_UNIT=influxdb3                 # or PID_FILE=... and START_CMD=...
#   URL=http://127.0.0.1:8181
#   TOKEN_FILE=/etc/influxdb3/admin-token.json
#   COMPACTION_OPTIONS="--min-age 1h"
#
# From a systemd service, set KillMode=mixed (stopping the unit then signals the routine alone,
# which ends once the server runs again) and a TimeoutStopSec= longer than a window.
#
# Exit status: kompactor maintain's (0 proven, 1 not compacted, 2 bad settings, 3 undone,
# 4 attention). Any other arguments are passed to kompactor maintain (e.g. --help, --json).
set -eu

if [ -n "${KOMPACTOR_ENV:-}" ]; then
    # shellcheck disable=SC1090
    . "$KOMPACTOR_ENV"
fi
KOMPACTOR=${KOMPACTOR:-kompactor}

case " $* " in
*" --help "* | *" -h "*) exec "$KOMPACTOR" maintain --help ;;
esac

: "${DATA_DIR:?set DATA_DIR (the server's --data-dir)}"
: "${HOSTS:?set HOSTS (the server's --node-id)}"

set -- "$DATA_DIR" --hosts "$HOSTS" --url "${URL:-http://127.0.0.1:8181}" "$@"
if [ -n "${TOKEN_FILE:-}" ]; then
    set -- "$@" --token-file "$TOKEN_FILE"
fi
if [ -n "${SYSTEMD_UNIT:-}" ]; then
    set -- "$@" --systemd-unit "$SYSTEMD_UNIT"
else
    : "${PID_FILE:?set SYSTEMD_UNIT, or PID_FILE and START_CMD}"
    : "${START_CMD:?set START_CMD (how to start the server)}"
    set -- "$@" --pid-file "$PID_FILE" --start-cmd "$START_CMD"
fi
# COMPACTION_OPTIONS is split on spaces on purpose: options and their values.
# shellcheck disable=SC2086
exec "$KOMPACTOR" maintain "$@" -- ${COMPACTION_OPTIONS:-}
