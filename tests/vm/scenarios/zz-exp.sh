# experiment: costs outside the pass
# vmtest: layout=default
devs="0000:00:01.0 0000:01:00.0 0000:02:01.0 0000:02:02.0 0000:00:05.0 0000:00:05.1"
{ echo "version = 1"; i=0; for d in $devs; do i=$((i + 1)); printf '\n[[device]]\nname = "d%s"\naddress = "%s"\n' $i $d; done; } >/tmp/all.toml
echo 0 > /proc/sys/kernel/randomize_va_space
for i in 1 2 3; do
echo "EXP a" >/dev/console; vfioctl --version >/dev/null
echo "EXP version" >/dev/console; vfioctl validate -c /tmp/all.toml >/dev/null
echo "EXP validate" >/dev/console; vfioctl status >/dev/null 2>&1
echo "EXP status" >/dev/console; vfioctl reconcile --dry-run -c /tmp/all.toml >/dev/null 2>&1
echo "EXP dry-run" >/dev/console; vfioctl snapshot >/dev/null 2>&1
echo "EXP snapshot" >/dev/console; cat /etc/passwd >/dev/null
echo "EXP cat" >/dev/console
done
pass done
