// SPDX-License-Identifier: GPL-2.0
/*
 * Every allocation of every call can fail (iommufd_fail_nth's way, on the
 * debug kernel): each call is made with its Nth fault-injectable
 * allocation failing, N = 1, 2, ... until it succeeds; after every
 * failure it must have returned an error and left the state, the fds and
 * the pins as they were (lu_fail_nth.h), and kmemleak must find nothing
 * at the end of the stage. FREEZE has its sweep in the integrity test.
 *  1. CREATE_SESSION, PRESERVE_FD, PRESERVE_FD_DEPS, PREPARE (memfds, a
 *     sample slot and the sample's subsystem); then sessions for kernel 2.
 *  2. loading the module with incoming data (a failed load loses
 *     nothing: the next load takes it all over), RETRIEVE_SESSION,
 *     RETRIEVE_FD (a big file, and a file with a chain of dependencies,
 *     whole), FINISH of a file never retrieved.
 */
#include <sys/syscall.h>

#include "kselftest_harness.h"
#include "lu_util.h"
#include "lu_fail_nth.h"
#include "lu_stage.h"
#include "../kernel/samples/lu_sample.h"

#define PAGE		4096ULL
#define SMALL_SIZE	(2 * PAGE)
#define NR_DEPS		3	/* tokens 2..4 each need the one before */
/*
 * Kernel 2 cannot take a success back (closing a retrieved session
 * finishes it), so each failure the kernel coped with moves on to the
 * next of these identical sessions.
 */
#define NR_COPIES	64

enum { SEED_SMALL = 41 };

static int open_dev(struct __test_metadata *_metadata)
{
	int dev = open(LU_DEVICE, O_RDWR);

	ASSERT_LE(0, dev);
	ASSERT_EQ(0, lu_fail_nth_setup()) TH_LOG("fail-nth needs the debug kernel");
	return dev;
}

static const char *copy_name(const char *kind, int copy)
{
	static char name[32];

	snprintf(name, sizeof(name), "nth-%s%d", kind, copy);
	return name;
}

TEST(kernel1_create_session)
{
	int dev = open_dev(_metadata);
	int session;

	LU_FAIL_NTH_SWEEP(dev, session, lu_create_session(dev, "nth-create"),
			  close(session));
	EXPECT_LT(0, lu_nth_failures);
	close(session);
	close(dev);
}

/* Each success takes a new memfd and token: there is no unpreserve. */
TEST(kernel1_preserve)
{
	int dev = open_dev(_metadata);
	int session = lu_create_session(dev, "nth-preserve");
	int memfd = lu_pattern_memfd(SMALL_SIZE, SEED_SMALL);
	uint64_t token = 1;
	int err;

	ASSERT_LE(0, session);
	LU_FAIL_NTH_SWEEP(dev, err, lu_preserve(session, memfd, token),
			  { close(memfd); token++;
			    memfd = lu_pattern_memfd(SMALL_SIZE, SEED_SMALL); });
	EXPECT_LT(0, lu_nth_failures);
	close(memfd);
	close(session);
	close(dev);
}

TEST(kernel1_preserve_deps)
{
	int dev = open_dev(_metadata);
	int session = lu_create_session(dev, "nth-deps");
	int a = lu_pattern_memfd(SMALL_SIZE, SEED_SMALL);
	int b = lu_pattern_memfd(SMALL_SIZE, SEED_SMALL);
	uint64_t dep = 1, token = 2;
	int err;

	ASSERT_EQ(0, lu_preserve(session, a, 1));
	LU_FAIL_NTH_SWEEP(dev, err, lu_preserve_deps(session, b, token, &dep, 1),
			  { close(b); token++;
			    b = lu_pattern_memfd(SMALL_SIZE, SEED_SMALL); });
	EXPECT_LT(0, lu_nth_failures);
	close(a);
	close(b);
	close(session);
	close(dev);
}

static int sample_slot(int memfd)
{
	struct lu_sample_create_slot req = {
		.size = sizeof(req), .memfd = memfd, .length = PAGE,
		.label = "nth",
	};
	int dev = open("/dev/lu_sample", O_RDWR);
	int err;

	if (dev < 0)
		return -errno;
	err = lu_ioctl(dev, LU_SAMPLE_CREATE_SLOT, &req);
	close(dev);
	return err ? err : req.fd;
}

/* PREPARE: memfds, a slot that depends on one, and the subsystem. */
TEST(kernel1_prepare)
{
	int dev = open_dev(_metadata);
	int session = lu_create_session(dev, "nth-prepare");
	int big = lu_pattern_memfd(64 * PAGE, SEED_SMALL);
	int small = lu_pattern_memfd(SMALL_SIZE, SEED_SMALL);
	int slot = sample_slot(small);
	uint64_t dep = 2;
	int err;

	ASSERT_LE(0, slot) TH_LOG("lu_sample.ko is loaded by the plan");
	ASSERT_EQ(0, lu_preserve(session, big, 1));
	ASSERT_EQ(0, lu_preserve(session, small, 2));
	ASSERT_EQ(0, lu_preserve_deps(session, slot, 3, &dep, 1));
	LU_FAIL_NTH_SWEEP(dev, err, lu_event(dev, LIVEUPDATE_EVENT_PREPARE, NULL),
			  { ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_CANCEL,
						  NULL)); });
	EXPECT_LT(0, lu_nth_failures);
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_CANCEL, NULL));
	close(slot);
	close(small);
	close(big);
	close(session);
	close(dev);
	/* No longer pinned after CANCEL; kernel 2 does without it. */
	EXPECT_EQ(0, system("rmmod lu_sample"));
}

/*
 * For kernel 2: NR_COPIES sessions "nth-aN" holding a memfd (token 1) and
 * a chain of memfds (tokens 2..4), and NR_COPIES sessions "nth-bN" with
 * one memfd nobody retrieves.
 */
TEST(kernel1_carry)
{
	int dev = open(LU_DEVICE, O_RDWR);
	int copy, session, fd, i;
	uint64_t dep;

	ASSERT_LE(0, dev);
	for (copy = 0; copy < NR_COPIES; copy++) {
		session = lu_create_session(dev, copy_name("a", copy));
		ASSERT_LE(0, session);
		for (i = 1; i <= 1 + NR_DEPS; i++) {
			fd = lu_pattern_memfd(SMALL_SIZE, SEED_SMALL + i);
			dep = i - 1;
			ASSERT_EQ(0, lu_preserve_deps(session, fd, i, &dep, i > 2));
			close(fd);
		}
		session = lu_create_session(dev, copy_name("b", copy));
		ASSERT_LE(0, session);
		fd = lu_pattern_memfd(SMALL_SIZE, SEED_SMALL);
		ASSERT_EQ(0, lu_preserve(session, fd, 1));
		close(fd);
	}
	/* From PREPARE on, the module holds the sessions until the kexec. */
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_FREEZE, NULL));
	close(dev);
}

/*
 * Defect: a load that failed after reading the hand-over freed the data
 * (or, failing after the table was taken, lost it for later loads). A
 * loaded module cannot be taken back without discarding what it took
 * over, so this sweep ends at the first success.
 */
TEST(kernel2_module_load)
{
	const char *module = getenv("LU_MODULE");
	struct liveupdate_get_state st;
	int fd, dev, err, n;

	ASSERT_NE(NULL, module);
	fd = open(module, O_RDONLY | O_CLOEXEC);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, lu_fail_nth_setup());
	for (n = 1; n < 10000; n++) {
		lu_fail_nth_arm(n);
		err = syscall(SYS_finit_module, fd, "", 0) ? -errno : 0;
		if (!lu_fail_nth_hit() || !err)
			break;
		ASSERT_NE(0, access("/dev/liveupdate", F_OK));
	}
	ASSERT_EQ(0, err);
	TH_LOG("module load failed cleanly at allocations 1..%d", n - 1);
	close(fd);
	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	ASSERT_EQ(0, lu_get_state(dev, &st));
	EXPECT_EQ((__u32)LIVEUPDATE_STATE_UPDATED, st.state);
	EXPECT_EQ(2U * NR_COPIES, st.nr_incoming_sessions);
	EXPECT_EQ((2U + NR_DEPS) * NR_COPIES, st.nr_incoming_files);
	close(dev);
}

/*
 * RETRIEVE_SESSION, then RETRIEVE_FD of a file and of the last of a
 * chain (which brings the others first), each copy checked whole.
 */
TEST(kernel2_retrieve)
{
	int dev = open_dev(_metadata);
	int sessions[NR_COPIES];
	int copy = 0, session, fd, i;

	LU_FAIL_NTH_SWEEP(dev, session,
			  lu_retrieve_session(dev, copy_name("a", copy)),
			  { sessions[copy++] = session;
			    ASSERT_GT(NR_COPIES, copy); });
	sessions[copy++] = session;
	EXPECT_LT(0, lu_nth_failures);
	for (; copy < NR_COPIES; copy++) {
		sessions[copy] = lu_retrieve_session(dev, copy_name("a", copy));
		ASSERT_LE(0, sessions[copy]);
	}

	copy = 0;
	LU_FAIL_NTH_SWEEP(dev, fd, lu_retrieve(sessions[copy], 1),
			  { close(fd); ASSERT_GT(NR_COPIES, ++copy); });
	EXPECT_LT(0, lu_nth_failures);
	EXPECT_EQ(-1, lu_pattern_verify(fd, SEED_SMALL + 1, 0, SMALL_SIZE));
	close(fd);

	copy = 0;
	LU_FAIL_NTH_SWEEP(dev, fd, lu_retrieve(sessions[copy], 1 + NR_DEPS),
			  { close(fd); ASSERT_GT(NR_COPIES, ++copy); });
	EXPECT_LT(0, lu_nth_failures);
	close(fd);
	for (i = 2; i <= 1 + NR_DEPS; i++) {
		fd = lu_retrieve(sessions[copy], i);
		ASSERT_LE(0, fd);
		EXPECT_EQ(-1, lu_pattern_verify(fd, SEED_SMALL + i, 0,
						SMALL_SIZE));
		close(fd);
	}
	for (copy = 0; copy < NR_COPIES; copy++)
		close(sessions[copy]);
	close(dev);
}

/* FINISH of a session whose file nobody retrieved frees it. */
TEST(kernel2_finish)
{
	struct liveupdate_get_state st;
	int dev = open_dev(_metadata);
	int sessions[NR_COPIES];
	int copy, err;

	for (copy = 0; copy < NR_COPIES; copy++) {
		sessions[copy] = lu_retrieve_session(dev, copy_name("b", copy));
		ASSERT_LE(0, sessions[copy]);
	}
	copy = 0;
	LU_FAIL_NTH_SWEEP(dev, err, lu_finish(sessions[copy]),
			  { ASSERT_GT(NR_COPIES, ++copy); });
	for (copy = 0; copy < NR_COPIES; copy++)
		close(sessions[copy]);
	ASSERT_EQ(0, lu_get_state(dev, &st));
	EXPECT_EQ(0U, st.nr_incoming_sessions);
	EXPECT_EQ(0U, st.nr_incoming_files);
	EXPECT_EQ((__u32)LIVEUPDATE_STATE_NORMAL, st.state);
	close(dev);
}

int main(int argc, char **argv)
{
	return lu_staged_main(argc, argv);
}
