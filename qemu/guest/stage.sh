# Runs one stage of a plan inside the guest (chroot into the host's root).
# Sourced settings come from the runner: /run/out/env, with the plan's
# commands, one per kernel (LU_COMMAND_1 to LU_COMMAND_$LU_STAGES).
# Exit status for init:
# 0 last stage passed, 10 kexec into the next stage failed, 11 the kexec
# is under way (systemctl kexec), else failure.
stage=$1
. /run/out/env
export HOME=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 LU_STAGE="$stage"
# The checkout's Python package, unless the guest has one installed
# (LU_PYTHONPATH set, even empty: the systemd guest's python3-liveupdate).
export PYTHONPATH="${LU_PYTHONPATH-$LU_CHECKOUT/python}"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Shell builtins only, here and below: each program started costs a
# fraction of a second on the debug kernel, at every stage. The plan's
# commands come in env (LU_COMMAND_N) rather than from a file: the
# shell's read takes a byte per call, and each call over 9p took a round
# trip through QEMU (2.4 s for a 600-byte plan).
stages=$LU_STAGES
eval "cmd=\${LU_COMMAND_$stage-}"
# "[N manual-load]" in the plan: the command loads liveupdate.ko itself.
load=$LU_MODULE
case $cmd in "#manual-load "*) load= cmd=${cmd#"#manual-load "} ;; esac
# For a command that kexecs into the next stage itself (liveupdate kexec):
# it reports its stage passed with
#   echo "LU-STAGE $LU_STAGE/$LU_STAGES RESULT 0"
# and boots the next kernel with this command line.
export LU_STAGES LU_NEXT_APPEND="$LU_APPEND lu.stage=$((stage + 1))"
cd "$LU_CHECKOUT" || exit 1

# kmemleak (debug kernel): the scan at the end of the stage must find
# nothing. (Boot leaves nothing it reports, so no scan is needed first; a
# scan takes 10 s or more on the debug kernel.) Objects younger than 5 s
# are not reported yet, so the scan waits until the command ended 5.1 s
# ago (loading the next kernel takes part of that time).
KMEMLEAK=/sys/kernel/debug/kmemleak
# now: $up is the uptime in seconds ("12.34"), $cs in hundredths.
now() { read -r up idle < /proc/uptime; cs=$((${up%.*} * 100 + 1${up#*.} - 100)); }
leaks() {
	[ -w $KMEMLEAK ] || return 0
	now
	wait=$((ended + 510 - cs))
	[ $wait -le 0 ] || sleep $((wait / 100)).$((wait / 10 % 10))$((wait % 10))
	now
	t=$up
	echo scan > $KMEMLEAK
	now
	echo "LU-GUEST kmemleak scan $t..$up"
	[ -s $KMEMLEAK ] || return 0
	grep -c 'unreferenced object' $KMEMLEAK | sed 's/^/LU-GUEST kmemleak: leaks found: /'
	head -n 80 $KMEMLEAK | sed 's/^/LU-GUEST kmemleak: /'
	return 1
}

now
echo "LU-STAGE $stage/$stages BEGIN $up"
if [ -n "$load" ]; then
	if ! insmod "$load"; then
		echo "LU-STAGE $stage/$stages RESULT 1 (insmod failed)"
		dmesg | tail -n 20
		exit 1
	fi
fi
sh -c "$cmd"
rc=$?
now
ended=$cs
# The next kernel is loaded before the scan, while young objects age.
loaded=no
if [ $rc = 0 ] && [ "$stage" -lt "$stages" ]; then
	kexec -s -l "$LU_KERNEL" --initrd="$LU_INITRD" \
		--command-line="$LU_APPEND lu.stage=$((stage + 1))" && loaded=yes
fi
leaks || { [ $rc != 0 ] || rc=1; }
now
echo "LU-STAGE $stage/$stages RESULT $rc $up"
[ $rc = 0 ] || { dmesg | tail -n 30; exit $rc; }
[ "$stage" -lt "$stages" ] || exit 0
[ $loaded = yes ] || exit 10
now
echo "LU-KEXEC $up"
# kexec -e does not return when it works; systemctl kexec (the systemd
# guest) queues the shutdown that kexecs and returns: 11 says so.
${LU_KEXEC:-kexec -e} && [ -n "${LU_KEXEC:-}" ] && exit 11
exit 10
