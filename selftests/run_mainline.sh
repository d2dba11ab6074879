#!/bin/sh
# Runs mainline Linux's own LUO kexec selftests (built unmodified from the
# guest kernel's source by `make mainline-selftests`) against liveupdate.ko:
# stage 1 before the kexec (each test leaves a daemon holding its
# sessions), stage 2 after it. They report by exit status only, so this
# prints a kselftest "# Totals:" line for the runner to count.
stage=${1:?usage: run_mainline.sh STAGE}
dir=${MAINLINE_TESTS:-build/mainline-selftests}
pass=0 fail=0
for test in luo_kexec_simple luo_multi_session luo_stress_sessions luo_stress_files; do
	echo "# mainline $test --stage $stage"
	if "$dir/$test" --stage "$stage"; then
		pass=$((pass + 1))
	else
		echo "# mainline $test --stage $stage FAILED"
		fail=$((fail + 1))
	fi
done
echo "# Totals: pass:$pass fail:$fail xfail:0 xpass:0 skip:0 error:0"
[ $fail = 0 ]
