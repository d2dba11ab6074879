// SPDX-License-Identifier: GPL-2.0
/*
 * A random ioctl fuzzer for /dev/liveupdate and session fds: random
 * command numbers, sizes and struct contents, fds of every kind (the
 * device, outgoing sessions, memfds, a pipe, a socket, /dev/null, closed
 * numbers), events in every state, sessions closed and reopened. It runs
 * for a bounded time (LU_FUZZ_SECONDS, default 60) on the debug kernel;
 * the runner fails the plan on any kernel report, and the stage's
 * kmemleak scan must be empty. Seeded and reproducible: the seed is
 * printed, and LU_FUZZ_SEED replays it.
 */
#include <sys/socket.h>
#include <time.h>

#include "kselftest_harness.h"
#include "lu_util.h"
#include "lu_stage.h"

#define NR_FDS		24
#define MAX_MEMFD	(64 * 1024)
#define MAX_FD		1024	/* RLIMIT_NOFILE's usual soft limit */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64*: cheap, and the same sequence for the same seed. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

static uint64_t below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

enum fd_kind { FD_SESSION, FD_MEMFD, FD_OTHER };

struct fuzz {
	int dev;
	int fds[NR_FDS];	/* any kind of fd, or -1 */
	enum fd_kind kinds[NR_FDS];
	uint8_t buf[512];
	unsigned long calls;
};

/* Any fd, or a number no fd has (never the console's 0, 1, 2). */
static int pick_fd(struct fuzz *f)
{
	switch (below(8)) {
	case 0:
		return f->dev;
	case 1:
		return 4000 + (int)below(96);
	default:
		return f->fds[below(NR_FDS)];
	}
}

/* Only liveupdate's own fds get commands of other drivers' numbers. */
static int pick_own_fd(struct fuzz *f)
{
	int i = below(NR_FDS);

	return below(2) || f->kinds[i] != FD_SESSION ? f->dev : f->fds[i];
}

static void put_fd(struct fuzz *f, int fd, enum fd_kind kind)
{
	int i = below(NR_FDS);

	if (fd < 0)
		return;
	if (f->fds[i] >= 0)
		close(f->fds[i]);
	f->fds[i] = fd;
	f->kinds[i] = kind;
}

static void random_name(uint8_t *name)
{
	static const char *const names[] = { "a", "b", "fuzz", "", "x/y" };
	size_t i, len;

	memset(name, 0, LIVEUPDATE_SESSION_NAME_LENGTH);
	if (below(4)) {
		snprintf((char *)name, LIVEUPDATE_SESSION_NAME_LENGTH, "%s",
			 names[below(5)]);
		return;
	}
	len = below(LIVEUPDATE_SESSION_NAME_LENGTH + 1);
	for (i = 0; i < len && i < LIVEUPDATE_SESSION_NAME_LENGTH; i++)
		name[i] = (uint8_t)rnd();
}

static void new_memfd(struct fuzz *f)
{
	int fd = memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	size_t size = below(MAX_MEMFD);

	if (fd < 0)
		return;
	if (ftruncate(fd, size) == 0 && size && below(2))
		lu_pattern_write(fd, (uint32_t)rnd(), below(size), 1);
	put_fd(f, fd, FD_MEMFD);
}

static void other_fd(struct fuzz *f)
{
	int sv[2];

	switch (below(3)) {
	case 0:
		if (!pipe(sv)) {
			put_fd(f, sv[0], FD_OTHER);
			put_fd(f, sv[1], FD_OTHER);
		}
		break;
	case 1:
		if (!socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) {
			put_fd(f, sv[0], FD_OTHER);
			put_fd(f, sv[1], FD_OTHER);
		}
		break;
	default:
		put_fd(f, open("/dev/null", O_RDWR), FD_OTHER);
	}
}

/* A struct for a liveupdate ioctl: a plausible or absurd size, random bytes. */
static void *random_arg(struct fuzz *f)
{
	uint32_t size;
	size_t i;

	switch (below(10)) {
	case 0:
		return NULL;
	case 1:
		return (void *)(uintptr_t)rnd();
	}
	for (i = 0; i < sizeof(f->buf); i++)
		f->buf[i] = below(3) ? 0 : (uint8_t)rnd();
	switch (below(4)) {
	case 0:
		size = below(sizeof(f->buf));
		break;
	case 1:
		size = (uint32_t)rnd();
		break;
	default:
		size = 8 * (1 + below(12));
	}
	memcpy(f->buf, &size, sizeof(size));
	return f->buf;
}

static void fuzz_step(struct fuzz *f)
{
	struct liveupdate_set_event ev = { .size = sizeof(ev) };
	struct liveupdate_get_state st;
	uint64_t deps[LIVEUPDATE_MAX_DEPS + 2];
	uint8_t name[LIVEUPDATE_SESSION_NAME_LENGTH];
	unsigned int i;
	int fd;

	f->calls++;
	switch (below(14)) {
	case 0:
		if (f->dev < 0) {
			f->dev = open(LU_DEVICE, O_RDWR);
		} else if (!below(4)) {
			close(f->dev);
			f->dev = -1;
		}
		break;
	case 1: {
		struct liveupdate_ioctl_create_session arg = { .size = sizeof(arg) };

		random_name(arg.name);
		if (!ioctl(f->dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &arg))
			put_fd(f, arg.fd, FD_SESSION);
		break;
	}
	case 2: {
		struct liveupdate_ioctl_retrieve_session arg = { .size = sizeof(arg) };

		random_name(arg.name);
		if (!ioctl(f->dev, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &arg))
			put_fd(f, arg.fd, FD_SESSION);
		break;
	}
	case 3:
		new_memfd(f);
		break;
	case 4:
		other_fd(f);
		break;
	case 5:
		lu_preserve(pick_fd(f), pick_fd(f), below(8));
		break;
	case 6:
		for (i = 0; i < ARRAY_SIZE(deps); i++)
			deps[i] = below(8);
		lu_preserve_deps(pick_fd(f), pick_fd(f), below(8), deps,
				 below(LIVEUPDATE_MAX_DEPS + 2));
		break;
	case 7:
		ev.event = below(8);
		ioctl(f->dev, LIVEUPDATE_IOCTL_SET_EVENT, &ev);
		break;
	case 8:
		lu_get_state(f->dev, &st);
		break;
	case 9:
		fd = lu_retrieve(pick_fd(f), below(8));
		put_fd(f, fd, FD_MEMFD);
		break;
	case 10:
		lu_finish(pick_fd(f));
		break;
	case 11:
		random_name(name);
		ioctl(pick_fd(f), LIVEUPDATE_SESSION_GET_NAME, name);
		break;
	case 12: {
		int i = below(NR_FDS);

		if (f->fds[i] >= 0)
			close(f->fds[i]);
		f->fds[i] = -1;
		break;
	}
	default:
		/* liveupdate's numbers on any fd; any number on its own. */
		if (below(3))
			ioctl(pick_fd(f), _IO(LIVEUPDATE_IOCTL_TYPE, below(256)),
			      random_arg(f));
		else
			ioctl(pick_own_fd(f), (unsigned long)(uint32_t)rnd(),
			      random_arg(f));
	}
}

FIXTURE(fuzz) {
};

FIXTURE_SETUP(fuzz)
{
}

FIXTURE_TEARDOWN(fuzz)
{
}

/*
 * Close every fd opened since @before was taken: random command numbers
 * can reach CREATE_SESSION or RETRIEVE_FD, whose fds the fuzzer never saw.
 */
static void close_new_fds(const bool *before, int keep)
{
	int fd;

	for (fd = 3; fd < MAX_FD; fd++)
		if (!before[fd] && fd != keep && fcntl(fd, F_GETFD) >= 0)
			close(fd);
}

/* Up to 5 minutes of fuzzing. */
TEST_F(fuzz, random_ioctls)
{
	static bool open_before[MAX_FD];
	const char *env_seed = getenv("LU_FUZZ_SEED");
	const char *env_secs = getenv("LU_FUZZ_SECONDS");
	struct liveupdate_get_state st;
	struct fuzz f = { .dev = -1 };
	uint64_t seed;
	time_t end;
	int i;

	seed = env_seed ? strtoull(env_seed, NULL, 0) : (uint64_t)time(NULL);
	rng_state = seed ?: 1;
	end = time(NULL) + (env_secs ? atoi(env_secs) : 60) % 300;
	TH_LOG("seed %llu (replay with LU_FUZZ_SEED=%llu)",
	       (unsigned long long)seed, (unsigned long long)seed);
	for (i = 0; i < NR_FDS; i++)
		f.fds[i] = -1;
	for (i = 0; i < MAX_FD; i++)
		open_before[i] = fcntl(i, F_GETFD) >= 0;
	while (time(NULL) < end)
		fuzz_step(&f);
	TH_LOG("%lu calls", f.calls);

	/* Leave the module as it was found: NORMAL, nothing held. */
	if (f.dev < 0)
		f.dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, f.dev);
	lu_event(f.dev, LIVEUPDATE_EVENT_CANCEL, NULL);
	close_new_fds(open_before, f.dev);
	ASSERT_EQ(0, lu_get_state(f.dev, &st));
	EXPECT_EQ((__u32)LIVEUPDATE_STATE_NORMAL, st.state);
	EXPECT_EQ(0U, st.nr_sessions);
	EXPECT_EQ(0U, st.nr_files);
	close(f.dev);
}

int main(int argc, char **argv)
{
	return lu_main(argc, argv);
}
