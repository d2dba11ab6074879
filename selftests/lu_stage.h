/* SPDX-License-Identifier: GPL-2.0 */
/*
 * main() of our kselftests: lu_main() runs every test, lu_staged_main()
 * the staged ones. A staged test named kernelN_... belongs to the plan's
 * Nth kernel; lu_staged_main() runs exactly the tests of the kernel that
 * LU_STAGE (set by qemu/guest/stage.sh) names. An unset or bad LU_STAGE,
 * or a stage without tests, fails: a staged test never skips its way to a
 * green run.
 *
 * Both raise every test's time limit to at least LU_TEST_TIMEOUT. The
 * harness's default of 30 s is a tenth of what the same test can take in
 * a TCG guest on a debug kernel sharing two cores with another guest (a
 * 2000-file PREPARE and FREEZE took 27 s here and more in CI). A hang is
 * still caught: by the hung-task detector and by the plan's time limit.
 */
#ifndef LU_STAGE_H
#define LU_STAGE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LU_TEST_TIMEOUT 900	/* seconds */

/* The plan's kernel this is, 1..99, or 0 if LU_STAGE says nothing valid. */
static inline int lu_stage(void)
{
	const char *s = getenv("LU_STAGE");
	char *end;
	long n;

	if (!s || !*s)
		return 0;
	n = strtol(s, &end, 10);
	return *end || n < 1 || n > 99 ? 0 : (int)n;
}

static inline void lu_raise_timeouts(void)
{
	struct __fixture_metadata *f;
	struct __test_metadata *t;

	for (f = __fixture_list; f; f = f->next)
		for (t = f->tests; t; t = t->next)
			if (t->timeout < LU_TEST_TIMEOUT)
				t->timeout = LU_TEST_TIMEOUT;
}

static inline int lu_main(int argc, char **argv)
{
	lu_raise_timeouts();
	return test_harness_run(argc, argv);
}

static inline int lu_staged_main(int argc, char **argv)
{
	struct __test_metadata *t;
	int stage = lu_stage();
	char prefix[16];
	char **args;
	int n = 0, i;

	if (!stage) {
		fprintf(stderr, "%s: LU_STAGE must name the plan's kernel (1, 2, ...)\n",
			argv[0]);
		return KSFT_FAIL;
	}
	snprintf(prefix, sizeof(prefix), "kernel%d_", stage);
	i = 0;
	for (t = _fixture_global.tests; t; t = t->next)
		i++;
	args = calloc(argc + 2 * i + 1, sizeof(*args));
	if (!args)
		return KSFT_FAIL;
	for (i = 0; i < argc; i++)
		args[n++] = argv[i];
	for (t = _fixture_global.tests; t; t = t->next) {
		if (!strncmp(t->name, prefix, strlen(prefix))) {
			args[n++] = "-t";
			args[n++] = (char *)t->name;
		}
	}
	if (n == argc) {
		fprintf(stderr, "%s: no test for kernel %d\n", argv[0], stage);
		return KSFT_FAIL;
	}
	return lu_main(n, args);
}

#endif /* LU_STAGE_H */
