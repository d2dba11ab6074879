// SPDX-License-Identifier: GPL-2.0
/*
 * The state machine in one kernel: every transition and every event in a
 * wrong state, rollback of failing events, what closing a session does in
 * each state (kill -9 of its holder included), racing events, uevents,
 * and what KHO would hand over after each step.
 */
#include <linux/netlink.h>
#include <stddef.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "lu_util.h"
#include "lu_stage.h"
#include "lu_expect.h"

#define MIB		(1024ULL * 1024)
#define DATA_SIZE	(4 * MIB)
#define HELD_SIZE	(64 * MIB)

FIXTURE(st) {
	int dev;
	int session;
};

FIXTURE_SETUP(st)
{
	int fd;

	self->dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, self->dev);
	self->session = lu_create_session(self->dev, "state");
	ASSERT_LE(0, self->session);
	fd = lu_pattern_memfd(DATA_SIZE, 1);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, lu_preserve(self->session, fd, 1));
	close(fd);
}

FIXTURE_TEARDOWN(st)
{
	struct liveupdate_get_state st;

	lu_set_param("test_fail_prepare", 0);
	lu_set_param("test_fail_freeze", 0);
	if (!lu_get_state(self->dev, &st) &&
	    (st.state == LIVEUPDATE_STATE_PREPARED || st.state == LIVEUPDATE_STATE_FROZEN))
		lu_event(self->dev, LIVEUPDATE_EVENT_CANCEL, NULL);
	if (self->session >= 0)
		close(self->session);
	close(self->dev);
}

TEST_F(st, get_state)
{
	struct liveupdate_get_state st;

	ASSERT_EQ(0, lu_get_state(self->dev, &st));
	EXPECT_EQ((uint32_t)LIVEUPDATE_STATE_NORMAL, st.state);
	EXPECT_EQ(4U, st.format_version);
	EXPECT_EQ(1U, st.nr_sessions);
	EXPECT_EQ(1U, st.nr_files);
	EXPECT_EQ(0U, st.nr_bytes);
	EXPECT_EQ(0U, st.nr_incoming_sessions);
	EXPECT_STREQ("normal", lu_sysfs_state());

	/* Shorter than the first version: refused; longer with a zero tail: fine. */
	struct {
		struct liveupdate_get_state st;
		uint64_t tail;
	} big = { .st.size = sizeof(big) };
	st.size = offsetof(struct liveupdate_get_state, nr_bytes);
	EXPECT_EQ(-EINVAL, lu_ioctl(self->dev, LIVEUPDATE_IOCTL_GET_STATE, &st));
	EXPECT_EQ(0, lu_ioctl(self->dev, LIVEUPDATE_IOCTL_GET_STATE, &big));
	EXPECT_EQ(1U, big.st.nr_sessions);
}

TEST_F(st, wrong_state_events)
{
	struct liveupdate_set_event ev = { .size = sizeof(ev) };
	uint32_t bad[] = { 0, 5, 0x80000000 };
	size_t i;

	EXPECT_EQ(-EBUSY, lu_event(self->dev, LIVEUPDATE_EVENT_FREEZE, NULL));
	EXPECT_EQ(-EBUSY, lu_event(self->dev, LIVEUPDATE_EVENT_CANCEL, NULL));
	EXPECT_EQ(-EBUSY, lu_event(self->dev, LIVEUPDATE_EVENT_FINISH, NULL));
	for (i = 0; i < ARRAY_SIZE(bad); i++)
		EXPECT_EQ(-EOPNOTSUPP, lu_event(self->dev, bad[i], NULL));
	ev.size = offsetof(struct liveupdate_set_event, err_session);
	ev.event = LIVEUPDATE_EVENT_PREPARE;
	EXPECT_EQ(-EINVAL, lu_ioctl(self->dev, LIVEUPDATE_IOCTL_SET_EVENT, &ev));
	lu_expect_state(_metadata, self->dev, LIVEUPDATE_STATE_NORMAL, "normal");

	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	EXPECT_EQ(-EBUSY, lu_event(self->dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	EXPECT_EQ(-EBUSY, lu_event(self->dev, LIVEUPDATE_EVENT_FINISH, NULL));
	lu_expect_state(_metadata, self->dev, LIVEUPDATE_STATE_PREPARED, "prepared");

	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_FREEZE, NULL));
	EXPECT_EQ(-EBUSY, lu_event(self->dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	EXPECT_EQ(-EBUSY, lu_event(self->dev, LIVEUPDATE_EVENT_FREEZE, NULL));
	EXPECT_EQ(-EBUSY, lu_event(self->dev, LIVEUPDATE_EVENT_FINISH, NULL));
	lu_expect_state(_metadata, self->dev, LIVEUPDATE_STATE_FROZEN, "frozen");
}

TEST_F(st, prepare_freeze_cancel)
{
	struct liveupdate_get_state st;

	EXPECT_EQ(0, lu_kho_published_table());
	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	ASSERT_EQ(0, lu_get_state(self->dev, &st));
	EXPECT_EQ(DATA_SIZE, st.nr_bytes);
	/* Nothing is published before FREEZE. */
	EXPECT_EQ(0, lu_kho_published_table());

	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_FREEZE, NULL));
	EXPECT_LT(0, lu_kho_published_table());

	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_CANCEL, NULL));
	lu_expect_state(_metadata, self->dev, LIVEUPDATE_STATE_NORMAL, "normal");
	ASSERT_EQ(0, lu_get_state(self->dev, &st));
	EXPECT_EQ(0U, st.nr_bytes);
	EXPECT_EQ(1U, st.nr_sessions);
	EXPECT_EQ(1U, st.nr_files);
	EXPECT_EQ(0, lu_kho_published_table());

	/* The cycle can run again. */
	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_CANCEL, NULL));
	lu_expect_state(_metadata, self->dev, LIVEUPDATE_STATE_NORMAL, "normal");
}

TEST_F(st, frozen_refuses_changes)
{
	int fd = lu_pattern_memfd(4096, 2);
	int other;

	ASSERT_LE(0, fd);
	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_FREEZE, NULL));
	EXPECT_EQ(-EBUSY, lu_create_session(self->dev, "late"));
	EXPECT_EQ(-EBUSY, lu_preserve(self->session, fd, 2));
	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_CANCEL, NULL));
	other = lu_create_session(self->dev, "late");
	EXPECT_LE(0, other);
	EXPECT_EQ(0, lu_preserve(self->session, fd, 2));
	close(other);
	close(fd);
}

TEST_F(st, preserve_while_prepared)
{
	struct liveupdate_get_state st;
	int fd = lu_pattern_memfd(MIB, 3);
	int other;

	ASSERT_LE(0, fd);
	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	other = lu_create_session(self->dev, "while-prepared");
	ASSERT_LE(0, other);
	ASSERT_EQ(0, lu_preserve(other, fd, 7));
	ASSERT_EQ(0, lu_get_state(self->dev, &st));
	/* Preserved while PREPARED means serialized at once. */
	EXPECT_EQ(DATA_SIZE + MIB, st.nr_bytes);
	EXPECT_EQ(2U, st.nr_sessions);
	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_CANCEL, NULL));
	ASSERT_EQ(0, lu_get_state(self->dev, &st));
	EXPECT_EQ(0U, st.nr_bytes);
	EXPECT_EQ(2U, st.nr_sessions);
	close(other);
	close(fd);
}

TEST_F(st, prepare_failure_rolls_back)
{
	struct liveupdate_set_event ev;
	struct liveupdate_get_state st;
	long long pins_before = lu_pins_held();
	int other, fd, i;

	other = lu_create_session(self->dev, "fails");
	ASSERT_LE(0, other);
	for (i = 10; i < 13; i++) {
		fd = lu_pattern_memfd(MIB, i);
		ASSERT_LE(0, fd);
		ASSERT_EQ(0, lu_preserve(other, fd, i));
		close(fd);
	}
	ASSERT_EQ(0, lu_set_param("test_fail_prepare", 12));
	EXPECT_EQ(-EIO, lu_event(self->dev, LIVEUPDATE_EVENT_PREPARE, &ev));
	/* The reply names the file that failed. */
	EXPECT_EQ(12U, ev.err_token);
	EXPECT_STREQ("fails", (char *)ev.err_session);
	lu_expect_state(_metadata, self->dev, LIVEUPDATE_STATE_NORMAL, "normal");
	ASSERT_EQ(0, lu_get_state(self->dev, &st));
	EXPECT_EQ(0U, st.nr_bytes);
	EXPECT_EQ(0, lu_kho_published_table());
	EXPECT_EQ(pins_before, lu_pins_held());

	/* Nothing stays pinned: the same set prepares fine afterwards. */
	ASSERT_EQ(0, lu_set_param("test_fail_prepare", 0));
	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	ASSERT_EQ(0, lu_get_state(self->dev, &st));
	EXPECT_EQ(DATA_SIZE + 3 * MIB, st.nr_bytes);
	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_CANCEL, NULL));
	close(other);
	EXPECT_EQ(pins_before, lu_pins_held());
}

TEST_F(st, freeze_failure_stays_prepared)
{
	struct liveupdate_set_event ev;

	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	ASSERT_EQ(0, lu_set_param("test_fail_freeze", 1));
	EXPECT_EQ(-EIO, lu_event(self->dev, LIVEUPDATE_EVENT_FREEZE, &ev));
	EXPECT_EQ(1U, ev.err_token);
	EXPECT_STREQ("state", (char *)ev.err_session);
	lu_expect_state(_metadata, self->dev, LIVEUPDATE_STATE_PREPARED, "prepared");
	EXPECT_EQ(0, lu_kho_published_table());
	ASSERT_EQ(0, lu_set_param("test_fail_freeze", 0));
	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_FREEZE, NULL));
	lu_expect_state(_metadata, self->dev, LIVEUPDATE_STATE_FROZEN, "frozen");
}

TEST_F(st, module_pinned_between_prepare_and_cancel)
{
	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	close(self->session);
	self->session = -1;
	close(self->dev);
	/* No fd is open, yet the prepared state keeps the module. */
	EXPECT_EQ(-1, syscall(SYS_delete_module, "liveupdate", O_NONBLOCK));
	EXPECT_EQ(EWOULDBLOCK, errno);
	self->dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, self->dev);
	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_CANCEL, NULL));
}

/*
 * A child creates and holds a session, the parent moves the state to
 * @events and kills the child with SIGKILL.
 */
FIXTURE(holder) {
	int dev;
};

FIXTURE_VARIANT(holder) {
	int nr_events;
	uint32_t state;
	uint32_t sessions_left;	/* after the kill */
	int create_err;		/* creating its name again after the kill */
};

FIXTURE_VARIANT_ADD(holder, normal) {
	.nr_events = 0, .state = LIVEUPDATE_STATE_NORMAL, .sessions_left = 0,
};

FIXTURE_VARIANT_ADD(holder, prepared) {
	.nr_events = 1, .state = LIVEUPDATE_STATE_PREPARED, .sessions_left = 1,
	.create_err = -EEXIST,
};

FIXTURE_VARIANT_ADD(holder, frozen) {
	.nr_events = 2, .state = LIVEUPDATE_STATE_FROZEN, .sessions_left = 1,
	.create_err = -EBUSY,
};

FIXTURE_SETUP(holder)
{
	self->dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, self->dev);
}

FIXTURE_TEARDOWN(holder)
{
	close(self->dev);
}

TEST_F(holder, kill9)
{
	static const uint32_t events[] = { LIVEUPDATE_EVENT_PREPARE, LIVEUPDATE_EVENT_FREEZE };
	struct liveupdate_get_state st;
	long long pins_before = lu_pins_held();
	long shmem_before = lu_meminfo_kb("Shmem:");
	int ready[2], status, i;
	char c;
	pid_t pid;

	ASSERT_EQ(0, pipe(ready));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		int session = lu_create_session(self->dev, "held");
		int fd = lu_pattern_memfd(HELD_SIZE, 4);

		if (session < 0 || fd < 0 || lu_preserve(session, fd, 1))
			_exit(1);
		close(fd);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(ready[1]);
	ASSERT_EQ(1, read(ready[0], &c, 1));
	close(ready[0]);
	for (i = 0; i < variant->nr_events; i++)
		ASSERT_EQ(0, lu_event(self->dev, events[i], NULL));

	ASSERT_EQ(0, kill(pid, SIGKILL));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_EQ(0, lu_get_state(self->dev, &st));
	EXPECT_EQ(variant->state, st.state);
	EXPECT_EQ(variant->sessions_left, st.nr_sessions);
	if (variant->sessions_left) {
		/* The module holds the session until CANCEL frees it. */
		EXPECT_EQ(variant->create_err, lu_create_session(self->dev, "held"));
		/* Its pages are pinned until then: the check below can fail. */
		EXPECT_LT(pins_before, lu_pins_held());
		ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_CANCEL, NULL));
		ASSERT_EQ(0, lu_get_state(self->dev, &st));
		EXPECT_EQ(0U, st.nr_sessions);
	}
	/*
	 * The memfd left the page cache and no pin is left on its pages.
	 * (MemFree is too noisy here: the per-CPU free lists of the CPU the
	 * child died on keep tens of MiB.)
	 */
	EXPECT_LT(lu_meminfo_kb("Shmem:") - shmem_before, 1024);
	EXPECT_EQ(pins_before, lu_pins_held());
}

struct racer {
	int dev;
	uint32_t event;
	pthread_barrier_t *go;
	int err;
};

static void *race(void *p)
{
	struct racer *r = p;

	pthread_barrier_wait(r->go);
	r->err = lu_event(r->dev, r->event, NULL);
	return NULL;
}

/* Two threads send the same event at once: exactly one moves the state. */
TEST_F(st, racing_events)
{
	static const uint32_t events[] = { LIVEUPDATE_EVENT_PREPARE, LIVEUPDATE_EVENT_FREEZE,
					   LIVEUPDATE_EVENT_CANCEL };
	pthread_barrier_t go;
	struct racer r[2];
	pthread_t t[2];
	int round, e, i;

	for (round = 0; round < 20; round++) {
		for (e = 0; e < 3; e++) {
			pthread_barrier_init(&go, NULL, 2);
			for (i = 0; i < 2; i++) {
				r[i] = (struct racer){ self->dev, events[e], &go, 1 };
				ASSERT_EQ(0, pthread_create(&t[i], NULL, race, &r[i]));
			}
			for (i = 0; i < 2; i++)
				pthread_join(t[i], NULL);
			pthread_barrier_destroy(&go);
			/* One wins, the other finds the state moved on. */
			EXPECT_EQ(-EBUSY, r[0].err + r[1].err);
			EXPECT_TRUE(!r[0].err || !r[1].err);
		}
	}
	lu_expect_state(_metadata, self->dev, LIVEUPDATE_STATE_NORMAL, "normal");
}

/* The state letter of /proc/@pid/stat (R, S, D, Z, ...), or 0. */
static char proc_state(pid_t pid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : 0;
}

static pid_t fork_event(int dev, uint32_t event)
{
	pid_t pid = fork();

	if (!pid)
		_exit(lu_event(dev, event, NULL) ? 1 : 0);
	return pid;
}

/*
 * A caller waiting for the lock behind a long PREPARE can be killed: it
 * dies while the PREPARE still runs. (With an uninterruptible wait, it
 * would die only after the PREPARE.) The PREPARE pins and preserves
 * every page of LONG_SIZE: seconds on the debug kernel.
 */
#define LONG_SIZE	(384 * MIB)
TEST_F(st, lock_wait_is_killable)
{
	int other = lu_create_session(self->dev, "waiter");
	pid_t holder, waiter;
	int status, i, fd;
	char state = 0;
	void *p;

	ASSERT_LE(0, other);
	fd = memfd_create("long", MFD_CLOEXEC);
	ASSERT_EQ(0, ftruncate(fd, LONG_SIZE));
	p = mmap(NULL, LONG_SIZE, PROT_WRITE, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, p);
	memset(p, 0x5a, LONG_SIZE);
	munmap(p, LONG_SIZE);
	ASSERT_EQ(0, lu_preserve(self->session, fd, 2));

	holder = fork_event(self->dev, LIVEUPDATE_EVENT_PREPARE);
	ASSERT_LT(0, holder);
	usleep(100000);
	waiter = fork();
	if (!waiter)
		_exit(lu_preserve(other, fd, 3) == -EINTR ? 0 : 1);
	ASSERT_LT(0, waiter);
	/* The waiter sleeps killably (shown as D) on the lock. */
	for (i = 0; i < 200 && state != 'D'; i++) {
		usleep(10000);
		state = proc_state(waiter);
	}
	ASSERT_EQ('D', state) TH_LOG("the waiter never slept on the lock");
	ASSERT_EQ(0, waitpid(holder, &status, WNOHANG))
		TH_LOG("PREPARE was over before the test could kill the waiter");
	ASSERT_EQ(0, kill(waiter, SIGKILL));
	ASSERT_EQ(waiter, waitpid(waiter, &status, 0));
	EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	EXPECT_EQ(0, waitpid(holder, &status, WNOHANG))
		TH_LOG("the killed waiter died only after PREPARE");
	ASSERT_EQ(holder, waitpid(holder, &status, 0));
	EXPECT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status));
	lu_expect_state(_metadata, self->dev, LIVEUPDATE_STATE_PREPARED, "prepared");
	ASSERT_EQ(0, lu_event(self->dev, LIVEUPDATE_EVENT_CANCEL, NULL));
	close(other);
	close(fd);
}

/* Reads uevents until one carries @want or 2 s pass; returns 1 if found. */
static int wait_uevent(int sock, const char *want, char *state, size_t len)
{
	char buf[4096];
	struct pollfd pfd = { .fd = sock, .events = POLLIN };

	while (poll(&pfd, 1, 2000) == 1) {
		ssize_t n = recv(sock, buf, sizeof(buf) - 1, 0);
		char *p;
		int found = 0;

		if (n <= 0)
			return 0;
		buf[n] = 0;
		/* NUL-separated KEY=value strings after "ACTION@DEVPATH". */
		for (p = buf; p < buf + n; p += strlen(p) + 1) {
			if (!strcmp(p, want))
				found = 1;
			if (!strncmp(p, "LIVEUPDATE_STATE=", 17))
				snprintf(state, len, "%s", p + 17);
		}
		if (found)
			return 1;
	}
	return 0;
}

TEST_F(st, uevents)
{
	struct sockaddr_nl addr = { .nl_family = AF_NETLINK, .nl_groups = 1 };
	static const struct { uint32_t event; const char *name, *state; } steps[] = {
		{ LIVEUPDATE_EVENT_PREPARE, "prepare", "prepared" },
		{ LIVEUPDATE_EVENT_FREEZE, "freeze", "frozen" },
		{ LIVEUPDATE_EVENT_CANCEL, "cancel", "normal" },
	};
	char want[64], state[32];
	size_t i;
	int sock;

	sock = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT);
	ASSERT_LE(0, sock);
	ASSERT_EQ(0, bind(sock, (struct sockaddr *)&addr, sizeof(addr)));
	for (i = 0; i < ARRAY_SIZE(steps); i++) {
		ASSERT_EQ(0, lu_event(self->dev, steps[i].event, NULL));
		snprintf(want, sizeof(want), "LIVEUPDATE_EVENT=%s", steps[i].name);
		state[0] = 0;
		EXPECT_TRUE(wait_uevent(sock, want, state, sizeof(state)));
		EXPECT_STREQ(steps[i].state, state);
	}
	/* A refused event sends nothing. */
	EXPECT_EQ(-EBUSY, lu_event(self->dev, LIVEUPDATE_EVENT_CANCEL, NULL));
	EXPECT_FALSE(wait_uevent(sock, "LIVEUPDATE_EVENT=cancel", state, sizeof(state)));
	close(sock);
}

int main(int argc, char **argv)
{
	return lu_main(argc, argv);
}
