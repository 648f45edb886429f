#!/usr/bin/env bash
# The archive's own cost per message: run with ARCHIVE=true (default) and ARCHIVE=false and
# compare (each message is archived twice: as sent for the sender, as received for the
# recipient). The measurement itself is offline_write_bytes.sh's.
ARCHIVE=${ARCHIVE:-true} exec "$(dirname "$0")/offline_write_bytes.sh" "$@"
