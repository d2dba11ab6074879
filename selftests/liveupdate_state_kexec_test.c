// SPDX-License-Identifier: GPL-2.0
/*
 * The state machine across real kexecs, three kernels:
 *  1. sessions cancelled from each state are gone; an orchestrated
 *     PREPARE/FREEZE carries the rest, including a session whose holder
 *     was killed after FREEZE and a page written into a hole after PREPARE.
 *  2. UPDATED until FINISH; a killed holder of a retrieved session
 *     finishes it; FINISH frees what nobody retrieved and the memory comes
 *     back. Then a kexec without events, where one session fails in the
 *     reboot notifier and is dropped.
 *  3. the notifier carried the good session; finishing the last session
 *     returns to NORMAL without a FINISH event.
 * Each test runs in the stage its name says (LU_STAGE).
 */
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "lu_util.h"
#include "lu_stage.h"
#include "lu_expect.h"

#define MIB		(1024ULL * 1024)
#define PAGE		4096ULL
#define KEPT_SIZE	(8 * MIB)
#define LATE_PAGE	(5 * MIB)	/* a hole until after PREPARE */
#define UNCLAIMED_SIZE	(64 * MIB)

enum { SEED_KEPT = 31, SEED_LATE, SEED_KILLED, SEED_UNCLAIMED, SEED_AUTO, SEED_GONE };


/*
 * Creates session @name holding, under @token, a memfd of @size bytes
 * whose first @data bytes hold pattern @seed. Returns the session fd and
 * the memfd in *@memfd if that is not NULL (else closes it).
 */
static int session_with_memfd(int dev, const char *name, size_t size,
			      size_t data, uint32_t seed, uint64_t token,
			      int *memfd)
{
	int session = lu_create_session(dev, name);
	int fd = memfd_create(name, MFD_CLOEXEC);

	if (session < 0 || fd < 0 || ftruncate(fd, size) ||
	    lu_pattern_write(fd, seed, 0, data) ||
	    lu_preserve(session, fd, token)) {
		if (session >= 0)
			close(session);
		session = -1;
	}
	if (memfd && session >= 0)
		*memfd = fd;
	else if (fd >= 0)
		close(fd);
	return session;
}

static int create_held(int dev, const char *name)
{
	return session_with_memfd(dev, name, MIB, MIB, SEED_KILLED, 1, NULL);
}

/* Forks a child that gets session @name with @get and holds it until killed. */
static pid_t hold_in_child(int dev, const char *name,
			   int (*get)(int dev, const char *name))
{
	int ready[2];
	char c = 0;
	pid_t pid;

	if (pipe(ready))
		return -1;
	pid = fork();
	if (pid == 0) {
		if (get(dev, name) < 0 || write(ready[1], "r", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(ready[1]);
	if (pid > 0 && read(ready[0], &c, 1) != 1)
		pid = -1;
	close(ready[0]);
	return pid;
}

static void kill_and_reap(struct __test_metadata *_metadata, pid_t pid)
{
	int status;

	ASSERT_EQ(0, kill(pid, SIGKILL));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
}

TEST(kernel1_cancel_from_each_state)
{
	static const uint32_t events[] = { LIVEUPDATE_EVENT_PREPARE, LIVEUPDATE_EVENT_FREEZE };
	static const char *const names[] = { "gone-normal", "gone-prepared", "gone-frozen" };
	struct liveupdate_get_state st;
	int dev, session, i, e;

	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	/* Session i lives through i events, is closed, then cancelled. */
	for (i = 0; i < 3; i++) {
		session = session_with_memfd(dev, names[i], MIB, MIB, SEED_GONE, 1, NULL);
		ASSERT_LE(0, session);
		for (e = 0; e < i; e++)
			ASSERT_EQ(0, lu_event(dev, events[e], NULL));
		ASSERT_EQ(0, close(session));
		if (i)
			ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_CANCEL, NULL));
		lu_expect_state(_metadata, dev, LIVEUPDATE_STATE_NORMAL, "normal");
		ASSERT_EQ(0, lu_get_state(dev, &st));
		EXPECT_EQ(0U, st.nr_sessions);
		EXPECT_EQ(0, lu_kho_published_table());
	}
	close(dev);
}

TEST(kernel1_prepare_freeze_kexec)
{
	struct liveupdate_get_state st;
	int dev, kept, unclaimed, fd;
	pid_t killed;

	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	kept = session_with_memfd(dev, "kept", KEPT_SIZE, LATE_PAGE - MIB, SEED_KEPT, 1, &fd);
	ASSERT_LE(0, kept);
	unclaimed = session_with_memfd(dev, "unclaimed", UNCLAIMED_SIZE, UNCLAIMED_SIZE,
				       SEED_UNCLAIMED, 1, NULL);
	ASSERT_LE(0, unclaimed);
	ASSERT_LE(0, session_with_memfd(dev, "killed-updated", MIB, MIB, SEED_KILLED, 1, NULL));
	killed = hold_in_child(dev, "killed-frozen", create_held);
	ASSERT_LT(0, killed);

	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	/* The workload keeps running: a write into a hole after PREPARE. */
	ASSERT_EQ(0, lu_pattern_write(fd, SEED_LATE, LATE_PAGE, PAGE));
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_FREEZE, NULL));
	EXPECT_LT(0, lu_kho_published_table());
	kill_and_reap(_metadata, killed);
	ASSERT_EQ(0, lu_get_state(dev, &st));
	EXPECT_EQ(4U, st.nr_sessions);
	EXPECT_EQ(LATE_PAGE - MIB + PAGE + UNCLAIMED_SIZE + 2 * MIB, st.nr_bytes);
	lu_expect_state(_metadata, dev, LIVEUPDATE_STATE_FROZEN, "frozen");
	ASSERT_EQ(0, lu_hold_fds_until_kexec());
}

TEST(kernel2_updated_until_finish)
{
	struct liveupdate_set_event ev;
	struct liveupdate_get_state st;
	int dev, kept, killed, fd, other;
	long before;
	pid_t pid;

	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	lu_expect_state(_metadata, dev, LIVEUPDATE_STATE_UPDATED, "updated");
	ASSERT_EQ(0, lu_get_state(dev, &st));
	EXPECT_EQ((uint32_t)LIVEUPDATE_STATE_KHO_BOOT, st.flags);
	EXPECT_EQ(4U, st.nr_incoming_sessions);
	EXPECT_EQ(4U, st.nr_incoming_files);
	EXPECT_EQ(0U, st.nr_sessions);
	EXPECT_EQ(-EBUSY, lu_event(dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	EXPECT_EQ(-EBUSY, lu_event(dev, LIVEUPDATE_EVENT_FREEZE, NULL));
	EXPECT_EQ(-EBUSY, lu_event(dev, LIVEUPDATE_EVENT_CANCEL, NULL));
	EXPECT_EQ(-ENOENT, lu_retrieve_session(dev, "gone-normal"));
	EXPECT_EQ(-ENOENT, lu_retrieve_session(dev, "gone-prepared"));
	EXPECT_EQ(-ENOENT, lu_retrieve_session(dev, "gone-frozen"));

	kept = lu_retrieve_session(dev, "kept");
	ASSERT_LE(0, kept);
	fd = lu_retrieve(kept, 1);
	ASSERT_LE(0, fd);
	EXPECT_EQ(-1, lu_pattern_verify(fd, SEED_KEPT, 0, LATE_PAGE - MIB));
	EXPECT_EQ((off_t)LATE_PAGE, lseek(fd, LATE_PAGE - MIB, SEEK_DATA));
	EXPECT_EQ(-1, lu_pattern_verify(fd, SEED_LATE, LATE_PAGE, PAGE));

	/* Its holder was killed after FREEZE: carried all the same. */
	killed = lu_retrieve_session(dev, "killed-frozen");
	ASSERT_LE(0, killed);
	other = lu_retrieve(killed, 1);
	ASSERT_LE(0, other);
	EXPECT_EQ(-1, lu_pattern_verify(other, SEED_KILLED, 0, MIB));
	close(other);

	/* A holder of a retrieved session dies: that session is finished. */
	pid = hold_in_child(dev, "killed-updated", lu_retrieve_session);
	ASSERT_LT(0, pid);
	kill_and_reap(_metadata, pid);
	ASSERT_EQ(0, lu_get_state(dev, &st));
	EXPECT_EQ(3U, st.nr_incoming_sessions);
	EXPECT_EQ(-ENOENT, lu_retrieve_session(dev, "killed-updated"));

	before = lu_free_kb();
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_FINISH, &ev));
	/* "unclaimed" was never retrieved; the retrieved sessions had nothing left. */
	EXPECT_EQ(1U, ev.nr_sessions);
	EXPECT_EQ(1U, ev.nr_files);
	EXPECT_EQ(UNCLAIMED_SIZE, ev.nr_bytes);
	EXPECT_LE((long)(UNCLAIMED_SIZE / 1024) * 15 / 16, lu_free_kb() - before);
	lu_expect_state(_metadata, dev, LIVEUPDATE_STATE_NORMAL, "normal");
	ASSERT_EQ(0, lu_get_state(dev, &st));
	EXPECT_EQ(0U, st.nr_incoming_sessions);
	EXPECT_EQ(0U, st.nr_incoming_files);
	EXPECT_EQ(-ENOENT, lu_retrieve_session(dev, "unclaimed"));
	EXPECT_EQ(-EBUSY, lu_event(dev, LIVEUPDATE_EVENT_FINISH, NULL));
	/* Retrieved files become ordinary files; the session is empty. */
	EXPECT_EQ(-1, lu_pattern_verify(fd, SEED_KEPT, 0, LATE_PAGE - MIB));
	EXPECT_EQ(-ENOENT, lu_retrieve(kept, 1));
	close(fd);
	close(kept);
	close(killed);
	close(dev);
}

/* Mainline's flow: no events; the reboot notifier prepares and freezes. */
TEST(kernel2_kexec_without_events)
{
	int dev;

	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	ASSERT_LE(0, session_with_memfd(dev, "auto", KEPT_SIZE, KEPT_SIZE, SEED_AUTO, 1, NULL));
	ASSERT_LE(0, session_with_memfd(dev, "auto-dropped", MIB, MIB, SEED_AUTO, 2, NULL));
	/* Preparing token 2 fails in the notifier: its session is dropped. */
	ASSERT_EQ(0, lu_set_param("test_fail_prepare", 2));
	ASSERT_EQ(0, lu_hold_fds_until_kexec());
}

TEST(kernel3_notifier_carried)
{
	int dev, session, fd;

	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	lu_expect_state(_metadata, dev, LIVEUPDATE_STATE_UPDATED, "updated");
	session = lu_retrieve_session(dev, "auto");
	ASSERT_LE(0, session);
	fd = lu_retrieve(session, 1);
	ASSERT_LE(0, fd);
	EXPECT_EQ(-1, lu_pattern_verify(fd, SEED_AUTO, 0, KEPT_SIZE));
	EXPECT_EQ(-ENOENT, lu_retrieve_session(dev, "auto-dropped"));
	/* The last session finished ends UPDATED without a FINISH event. */
	ASSERT_EQ(0, lu_finish(session));
	lu_expect_state(_metadata, dev, LIVEUPDATE_STATE_NORMAL, "normal");
	close(fd);
	close(session);
	close(dev);
}

int main(int argc, char **argv)
{
	return lu_staged_main(argc, argv);
}
