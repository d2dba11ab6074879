# The systemd guest's stage (run by lu-stage.service, qemu/systemd-image.sh):
# what the busybox guest's /init does around stage.sh, as a service of a
# system that boots as a host does. Ends with the verdict and a poweroff,
# which makes QEMU exit, unless the stage kexecs into the next one.
stage=1
read -r cmdline < /proc/cmdline
for arg in $cmdline; do
	case $arg in lu.stage=*) stage=${arg#lu.stage=} ;; esac
done
echo "LU-GUEST init (systemd)"
sh /run/out/stage.sh "$stage"
case $? in
11) exit 0 ;;
0) echo "LU-GUEST stage $stage passed, last stage"; echo "LU-VERDICT PASS" ;;
10) echo "LU-GUEST stage $stage passed, kexec failed"; echo "LU-VERDICT FAIL" ;;
*) echo "LU-VERDICT FAIL" ;;
esac
sync
systemctl poweroff
