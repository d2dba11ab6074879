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

/* Makes every allocation injectable, quietly; opens this task's knob. */
static inline int lu_fail_nth_setup(void)
{
	static const char *const knobs[][2] = {
		{ "failslab/ignore-gfp-wait", "N" },
		{ "fail_page_alloc/ignore-gfp-wait", "N" },
		{ "fail_page_alloc/ignore-gfp-highmem", "N" },
		{ "fail_page_alloc/min-order", "0" },
		{ "failslab/verbose", "0" },
		{ "fail_page_alloc/verbose", "0" },
	};
	char path[128];
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(knobs); i++) {
		int fd, ok;

		snprintf(path, sizeof(path), "/sys/kernel/debug/%s",
			 knobs[i][0]);
		fd = open(path, O_WRONLY);
		if (fd < 0)
			return -errno;
		ok = write(fd, knobs[i][1], strlen(knobs[i][1])) > 0;
		close(fd);
		if (!ok)
			return -EIO;
	}
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
 * LU_FAIL_NTH_SWEEP(dev, result, call): makes @call (an expression whose
 * value is negative on failure) with allocation N failing, N = 1, 2, ...
 * Each failure is checked as above. Ends at the first success, whose
 * value is left in @result; the number of failures is in lu_nth_failures.
 */
static int lu_nth_failures;

#define LU_FAIL_NTH_SWEEP(dev, result, call) do {			\
	struct lu_snapshot __before, __after;				\
	bool __hit;							\
	int __n;							\
									\
	for (__n = 1; __n < 10000; __n++) {				\
		lu_snapshot(dev, &__before);				\
		lu_fail_nth_arm(__n);					\
		(result) = (call);					\
		__hit = lu_fail_nth_hit();				\
		if ((result) >= 0)					\
			break;						\
		ASSERT_TRUE(__hit) TH_LOG(#call ": %d without an injected failure", (int)(result)); \
		lu_snapshot(dev, &__after);				\
		EXPECT_SAME_SNAPSHOT(&__before, &__after);		\
		if (_metadata->exit_code != KSFT_PASS)			\
			TH_LOG(#call ": allocation %d changed state", __n); \
		ASSERT_EQ(KSFT_PASS, _metadata->exit_code);		\
	}								\
	lu_nth_failures = __n - 1;					\
	TH_LOG(#call ": failed cleanly at allocations 1..%d", __n - 1); \
} while (0)

#endif /* LU_FAIL_NTH_H */
