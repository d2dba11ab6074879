/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Fault injection the iommufd_fail_nth way (debug kernel): fail the Nth
 * fault-injectable allocation (failslab, fail_page_alloc) of this task,
 * for N = 1, 2, ... until the call succeeds. After every failure the
 * call must have returned an error and left the module's state, the
 * process's fds and the FOLL_PIN count as they were, so that the same
 * call can simply be made again.
 */
#ifndef LU_FAIL_NTH_H
#define LU_FAIL_NTH_H

#include "lu_util.h"

static int lu_fail_nth_fd = -1;

/*
 * kmemleak's own metadata allocations fall back to a pool when they fail:
 * failing them proves nothing and ends a sweep that cannot take its
 * success back (a module load). Only the other slab caches fail.
 */
static inline int lu_fail_nth_skip_kmemleak(void)
{
	DIR *dir = opendir("/sys/kernel/slab");
	struct dirent *de;
	char path[512];
	bool ok;
	int fd;

	if (!dir)
		return -errno;
	while ((de = readdir(dir))) {
		if (de->d_name[0] == '.' || !strncmp(de->d_name, "kmemleak", 8))
			continue;
		snprintf(path, sizeof(path), "/sys/kernel/slab/%s/failslab",
			 de->d_name);
		fd = open(path, O_WRONLY);
		if (fd >= 0) {
			(void)!write(fd, "1", 1);
			close(fd);
		}
	}
	closedir(dir);
	fd = open("/sys/kernel/debug/failslab/cache-filter", O_WRONLY);
	if (fd < 0)
		return -errno;
	ok = write(fd, "Y", 1) == 1;
	close(fd);
	return ok ? 0 : -EIO;
}

/* Writes fault injection's debugfs knobs: {"failslab/interval", "7"}. */
static inline int lu_fault_knobs(const char *const knobs[][2], unsigned int n)
{
	char path[128];
	unsigned int i;
	int err;

	for (i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "/sys/kernel/debug/%s", knobs[i][0]);
		err = lu_write_str(path, knobs[i][1]);
		if (err)
			return err;
	}
	return 0;
}

/* Makes every allocation but kmemleak's injectable, quietly. */
static inline int lu_fault_all_allocations(void)
{
	static const char *const knobs[][2] = {
		{ "failslab/ignore-gfp-wait", "N" },
		{ "fail_page_alloc/ignore-gfp-wait", "N" },
		{ "fail_page_alloc/ignore-gfp-highmem", "N" },
		{ "fail_page_alloc/min-order", "0" },
		{ "failslab/verbose", "0" },
		{ "fail_page_alloc/verbose", "0" },
	};
	int err = lu_fault_knobs(knobs, ARRAY_SIZE(knobs));

	return err ?: lu_fail_nth_skip_kmemleak();
}

/* lu_fault_all_allocations(), and opens this task's fail-nth. */
static inline int lu_fail_nth_setup(void)
{
	char path[128];
	int err = lu_fault_all_allocations();

	if (err)
		return err;
	snprintf(path, sizeof(path), "/proc/self/task/%d/fail-nth", gettid());
	lu_fail_nth_fd = open(path, O_RDWR);
	return lu_fail_nth_fd < 0 ? -errno : 0;
}

static inline void lu_fail_nth_arm(int n)
{
	char buf[16];
	int len = snprintf(buf, sizeof(buf), "%d", n);

	(void)!pwrite(lu_fail_nth_fd, buf, len, 0);
}

/* Disarms; true if the armed failure happened. */
static inline bool lu_fail_nth_hit(void)
{
	char buf[16] = "";

	(void)!pread(lu_fail_nth_fd, buf, sizeof(buf) - 1, 0);
	(void)!pwrite(lu_fail_nth_fd, "0", 1, 0);
	return buf[0] == '0';
}

/* What a failed call must leave as it was. */
struct lu_snapshot {
	struct liveupdate_get_state st;
	int fds;
	long long pins;
};

static inline void lu_snapshot(int dev, struct lu_snapshot *s)
{
	lu_get_state(dev, &s->st);
	s->fds = lu_count_fds();
	s->pins = lu_pins_held();
}

#define EXPECT_SAME_SNAPSHOT(a, b) do {					\
	EXPECT_EQ((a)->st.state, (b)->st.state);			\
	EXPECT_EQ((a)->st.nr_sessions, (b)->st.nr_sessions);		\
	EXPECT_EQ((a)->st.nr_files, (b)->st.nr_files);			\
	EXPECT_EQ((a)->st.nr_bytes, (b)->st.nr_bytes);			\
	EXPECT_EQ((a)->st.nr_incoming_sessions,				\
		  (b)->st.nr_incoming_sessions);			\
	EXPECT_EQ((a)->st.nr_incoming_files, (b)->st.nr_incoming_files); \
	EXPECT_EQ((a)->fds, (b)->fds);					\
	EXPECT_EQ((a)->pins, (b)->pins);				\
} while (0)

/*
 * LU_FAIL_NTH_SWEEP(dev, result, call, undo): makes @call (an expression
 * whose value is negative on failure) with allocation N failing, N = 1,
 * 2, ... Each failure is checked as above, and the same call is made
 * again with N + 1. A call may also succeed although allocation N failed
 * (the kernel coped: kmemleak's own metadata, for one, falls back to a
 * pool): @undo then takes the success back and the sweep goes on. The
 * sweep ends when the call succeeds without reaching N; its value is left
 * in @result. lu_nth_failures counts the failed calls, lu_nth_coped the
 * successes despite a failure.
 */
static int lu_nth_failures __maybe_unused, lu_nth_coped __maybe_unused;

#define LU_FAIL_NTH_SWEEP(dev, result, call, undo) do {		\
	struct lu_snapshot __before, __after;				\
	bool __hit;							\
	int __n;							\
									\
	lu_nth_failures = 0;						\
	lu_nth_coped = 0;						\
	for (__n = 1; __n < 10000; __n++) {				\
		lu_snapshot(dev, &__before);				\
		lu_fail_nth_arm(__n);					\
		(result) = (call);					\
		__hit = lu_fail_nth_hit();				\
		if ((result) >= 0 && !__hit)				\
			break;						\
		if ((result) >= 0) {					\
			lu_nth_coped++;					\
			undo;						\
			continue;					\
		}							\
		lu_nth_failures++;					\
		ASSERT_TRUE(__hit) TH_LOG(#call ": %d without an injected failure", (int)(result)); \
		lu_snapshot(dev, &__after);				\
		EXPECT_SAME_SNAPSHOT(&__before, &__after);		\
		if (_metadata->exit_code != KSFT_PASS)			\
			TH_LOG(#call ": allocation %d changed state", __n); \
		ASSERT_EQ(KSFT_PASS, _metadata->exit_code);		\
	}								\
	ASSERT_GT(10000, __n);						\
	TH_LOG(#call ": %d allocations: %d failed cleanly, %d coped",	\
	       __n - 1, lu_nth_failures, lu_nth_coped);		\
} while (0)

#endif /* LU_FAIL_NTH_H */
