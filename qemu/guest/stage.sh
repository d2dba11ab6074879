# Runs one stage of a plan inside the guest (chroot into the host's root).
# Sourced settings come from the runner: /run/out/env. The plan has one
# shell command per line, one line per kernel. Exit status for init:
# 0 last stage passed, 10 kexec into the next stage failed, else failure.
stage=$1
. /run/out/env
export HOME=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 LU_STAGE="$stage"
export PYTHONPATH="$LU_CHECKOUT/python"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
stages=$(grep -c '' /run/out/plan)
cmd=$(sed -n "${stage}p" /run/out/plan)
# For a command that kexecs into the next stage itself (liveupdate kexec):
# it reports its stage passed with
#   echo "LU-STAGE $LU_STAGE/$LU_STAGES RESULT 0"
# and boots the next kernel with this command line.
export LU_STAGES="$stages" LU_NEXT_APPEND="$LU_APPEND lu.stage=$((stage + 1))"
cd "$LU_CHECKOUT" || exit 1

echo "LU-STAGE $stage/$stages BEGIN $(cut -d' ' -f1 /proc/uptime)"
if [ -n "$LU_MODULE" ]; then
	if ! insmod "$LU_MODULE"; then
		echo "LU-STAGE $stage/$stages RESULT 1 (insmod failed)"
		dmesg | tail -n 20
		exit 1
	fi
fi
sh -c "$cmd"
rc=$?
echo "LU-STAGE $stage/$stages RESULT $rc $(cut -d' ' -f1 /proc/uptime)"
[ $rc = 0 ] || { dmesg | tail -n 30; exit $rc; }
[ "$stage" -lt "$stages" ] || exit 0

kexec -s -l "$LU_KERNEL" --initrd="$LU_INITRD" \
	--command-line="$LU_APPEND lu.stage=$((stage + 1))" || exit 10
echo "LU-KEXEC $(cut -d' ' -f1 /proc/uptime)"
kexec -e
exit 10
