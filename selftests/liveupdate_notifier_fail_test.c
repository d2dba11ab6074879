// SPDX-License-Identifier: GPL-2.0
/*
 * Allocation failures in the kexec reboot notifier (debug kernel, two
 * kernels). Without events the notifier prepares and freezes every
 * session inside reboot(), where the kexec can no longer be refused: a
 * session that fails there must be dropped whole, the others carried
 * whole. fail-nth cannot sweep this (each attempt ends in a kexec), so
 * failslab and fail_page_alloc each fail every INTERVAL-th allocation,
 * TIMES times, of the one task that calls reboot(): the failures land at
 * different points of different sessions' work.
 *  1. NR_SESSIONS sessions of two memfds each (in odd ones the second
 *     depends on the first) are held by a child that, on SIGUSR1 (the
 *     plan sends it once the next kernel is loaded), marks itself for
 *     fault injection and kexecs.
 *  2. every session came back whole (both files, every byte) or not at
 *     all, and some, at most 2 * TIMES, did not.
 */
#include <signal.h>
#include <sys/reboot.h>
#include <linux/reboot.h>

#include "kselftest_harness.h"
#include "lu_util.h"
#include "lu_stage.h"
#include "lu_expect.h"
#include "lu_fail_nth.h"

#define NR_SESSIONS	32
#define FILE_SIZE	(16 * 4096)
#define INTERVAL	7
#define TIMES		6
#define STR_(x)		#x
#define STR(x)		STR_(x)
#define HOLDER_PID	"/tmp/lu-notifier-holder"

static void session_name(char *buf, size_t len, unsigned int i)
{
	snprintf(buf, len, "nf-%02u", i);
}

static uint32_t seed_of(unsigned int i, unsigned int token)
{
	return 500 + i * 2 + token;
}

static int fail_every_nth_allocation(void)
{
	static const char *const knobs[][2] = {
		{ "failslab/task-filter", "Y" },
		{ "failslab/probability", "100" },
		{ "failslab/interval", STR(INTERVAL) },
		{ "failslab/times", STR(TIMES) },
		{ "fail_page_alloc/task-filter", "Y" },
		{ "fail_page_alloc/probability", "100" },
		{ "fail_page_alloc/interval", STR(INTERVAL) },
		{ "fail_page_alloc/times", STR(TIMES) },
	};
	int err = lu_fault_all_allocations();

	return err ?: lu_fault_knobs(knobs, ARRAY_SIZE(knobs));
}

/* The holder: waits for SIGUSR1, then fails and kexecs. Never returns. */
static void hold_and_kexec(void)
{
	sigset_t usr1;
	int sig;

	setsid();
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigwait(&usr1, &sig);
	if (!lu_write_str("/proc/self/make-it-fail", "1"))
		reboot(LINUX_REBOOT_CMD_KEXEC);
	_exit(1);
}

TEST(kernel1_hold_sessions_for_a_failing_notifier)
{
	unsigned int i, token;
	sigset_t usr1;
	char name[32];
	uint64_t dep;
	pid_t child;
	int dev, session, fd;
	FILE *f;

	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	for (i = 0; i < NR_SESSIONS; i++) {
		session_name(name, sizeof(name), i);
		session = lu_create_session(dev, name);
		ASSERT_LE(0, session);
		for (token = 1; token <= 2; token++) {
			fd = lu_pattern_memfd(FILE_SIZE, seed_of(i, token));
			ASSERT_LE(0, fd);
			dep = 1;
			/* Odd sessions: file 2 depends on file 1. */
			ASSERT_EQ(0, lu_preserve_deps(session, fd, token, &dep,
						      token == 2 && i % 2));
			close(fd);
		}
	}
	ASSERT_EQ(0, fail_every_nth_allocation());
	/* Blocked before the fork, so that no early signal is lost. */
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	ASSERT_EQ(0, sigprocmask(SIG_BLOCK, &usr1, NULL));
	child = fork();
	ASSERT_LE(0, child);
	if (child == 0)
		hold_and_kexec();
	f = fopen(HOLDER_PID, "w");
	ASSERT_NE(NULL, f);
	ASSERT_LT(0, fprintf(f, "%d\n", child));
	ASSERT_EQ(0, fclose(f));
}

TEST(kernel2_each_session_whole_or_dropped)
{
	struct liveupdate_get_state st;
	unsigned int i, token, dropped = 0;
	int dev, session, fd;
	char name[32];

	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	ASSERT_EQ(0, lu_get_state(dev, &st));
	for (i = 0; i < NR_SESSIONS; i++) {
		session_name(name, sizeof(name), i);
		session = lu_retrieve_session(dev, name);
		if (session == -ENOENT) {
			dropped++;
			continue;
		}
		ASSERT_LE(0, session) TH_LOG("%s: %d", name, session);
		for (token = 1; token <= 2; token++) {
			fd = lu_retrieve(session, token);
			ASSERT_LE(0, fd) TH_LOG("%s: file %u: %d", name, token, fd);
			EXPECT_EQ(-1, lu_pattern_verify(fd, seed_of(i, token), 0, FILE_SIZE))
				TH_LOG("%s: file %u damaged", name, token);
			close(fd);
		}
		ASSERT_EQ(0, lu_finish(session));
		close(session);
	}
	TH_LOG("%u of %u sessions dropped in the notifier", dropped, NR_SESSIONS);
	EXPECT_EQ(NR_SESSIONS - dropped, st.nr_incoming_sessions);
	EXPECT_LE(1U, dropped);
	EXPECT_GE(2U * TIMES, dropped);
	lu_expect_state(_metadata, dev, LIVEUPDATE_STATE_NORMAL, "normal");
	close(dev);
}

int main(int argc, char **argv)
{
	return lu_staged_main(argc, argv);
}
