# auditd.conf of a private auditd (`auditd -n -c DIR`): its log in DIR, its
# plugins in DIR/plugins.d. Shared by bench/lib.sh and tests/golden/record.sh.
# shellcheck shell=bash

# $1: the directory, $2: log_format (RAW or ENRICHED). Prints the file.
auditd_conf() {
    cat << CONF
local_events = yes
write_logs = yes
log_file = $1/audit.log
log_group = root
log_format = $2
flush = INCREMENTAL_ASYNC
freq = 50
max_log_file = 2048
num_logs = 2
max_log_file_action = ROTATE
priority_boost = 4
name_format = NONE
space_left = 75
space_left_action = IGNORE
admin_space_left = 50
admin_space_left_action = IGNORE
disk_full_action = IGNORE
disk_error_action = IGNORE
q_depth = 8000
overflow_action = SYSLOG
max_restarts = 10
plugin_dir = $1/plugins.d
end_of_event_timeout = 2
CONF
}
