/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Checks shared by liveupdate's C selftests that use the kselftest harness
 * (include kselftest_harness.h and lu_util.h first).
 */
#ifndef LU_EXPECT_H
#define LU_EXPECT_H

/* The state GET_STATE reports and the name sysfs shows agree with @state. */
static inline void lu_expect_state(struct __test_metadata *_metadata, int dev,
				   uint32_t state, const char *name)
{
	struct liveupdate_get_state st;

	ASSERT_EQ(0, lu_get_state(dev, &st));
	EXPECT_EQ(state, st.state);
	EXPECT_STREQ(name, lu_sysfs_state());
}

#endif /* LU_EXPECT_H */
