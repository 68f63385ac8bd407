# Helpers for scenarios in the systemd guest (sourced after lib.sh).

# as_user 'COMMAND LINE': as uid/gid 1000 without capabilities (util-linux setpriv).
as_user() { setpriv --reuid=1000 --regid=1000 --clear-groups --inh-caps=-all sh -c "$*"; }

# unit_prop UNIT PROPERTY: one property's value.
unit_prop() { systemctl show -P "$2" "$1"; }

# wait_active UNIT [SECONDS]: until the unit is active.
wait_active() {
    _n=$(( ${2:-30} * 5 ))
    while [ "$(systemctl is-active "$1")" != active ] && [ "$_n" -gt 0 ]; do
        sleep 0.2; _n=$((_n - 1))
    done
    [ "$(systemctl is-active "$1")" = active ]
}

# wait_held DOMAIN [SECONDS]: until watch publishes DOMAIN with a window.
wait_held() {
    _n=$(( ${2:-30} * 5 ))
    while ! grep -q "\"$1\"" /run/vfioctl/domains.json 2>/dev/null && [ "$_n" -gt 0 ]; do
        sleep 0.2; _n=$((_n - 1))
    done
    grep -q "\"$1\"" /run/vfioctl/domains.json 2>/dev/null
}

# journal_since CURSOR-FILE: the unit's journal since the cursor saved in the file.
journal_unit() { journalctl -u vfioctl-watch --no-pager -o cat "$@"; }
