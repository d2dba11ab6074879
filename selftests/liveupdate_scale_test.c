// SPDX-License-Identifier: GPL-2.0
/*
 * Scale across a real kexec (two kernels): 100,000 memfds in 1,000
 * sessions, and a chain of 10,000 memfds each depending on the one
 * before, in one hand-over. Before, the table was one block capped at
 * 4 MiB (about 74,000 files; more returned E2BIG), and reading it checked
 * session names pairwise.
 *
 * Every file is told apart by its identity (session and index): its size,
 * file position and token derive from it, and every tenth carries a page
 * of data whose pattern is seeded by it, so a file swapped with another,
 * in its session or across sessions, is caught.
 *  1. build, PREPARE, FREEZE; the module holds the sessions (fds closed).
 *  2. GET_STATE counts everything; every session and file comes back
 *     whole; the chain comes back from one retrieval of its last file.
 */
#include <sys/resource.h>
#include <sys/stat.h>

#include "kselftest_harness.h"
#include "lu_util.h"
#include "lu_stage.h"

#define PAGE		4096ULL
#define PER_SESSION	100
#define MAX_SESSIONS	1000
#define CHAIN_NAME	"scale-chain"
#define SEED_BASE	1000

/*
 * The shape: 1,000 sessions of 100 files and a 10,000-file chain, unless
 * LU_SCALE="SESSIONS CHAIN" asks for less (both kernels must agree).
 */
static unsigned int nr_sessions = MAX_SESSIONS, chain_len = 10000;

static void read_shape(struct __test_metadata *_metadata)
{
	const char *shape = getenv("LU_SCALE");

	if (shape)
		ASSERT_EQ(2, sscanf(shape, "%u %u", &nr_sessions, &chain_len));
	ASSERT_GE((unsigned int)MAX_SESSIONS, nr_sessions);
	ASSERT_LT(0U, chain_len);
}

/* File @f of session @s: 0 .. nr_sessions * PER_SESSION - 1. */
static unsigned int identity(unsigned int s, unsigned int f)
{
	return s * PER_SESSION + f;
}

static uint64_t token_of(unsigned int id)
{
	return 0x5ca1e00000000ULL + id;
}

/* Sizes from one page to 64 pages, some not page-aligned. */
static off_t size_of(unsigned int id)
{
	return PAGE * (1 + id % 64) + (id % 3 ? 0 : id % 4096);
}

static bool has_data(unsigned int id)
{
	return id % 10 == 0;
}

static void session_name(char *buf, size_t len, unsigned int s)
{
	snprintf(buf, len, "scale-%04u", s);
}

/* A memfd with @id's size, position and (every tenth) data page. */
static int identity_memfd(unsigned int id)
{
	int fd = memfd_create("scale", MFD_CLOEXEC);

	if (fd < 0)
		return -1;
	if (ftruncate(fd, size_of(id)) ||
	    (has_data(id) && lu_pattern_write(fd, SEED_BASE + id, 0, PAGE)) ||
	    lseek(fd, id, SEEK_SET) != id) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Whether @fd is @id's file, whole. */
static void check_identity(struct __test_metadata *_metadata, int fd,
			   unsigned int id)
{
	struct stat st;

	ASSERT_EQ(0, fstat(fd, &st));
	ASSERT_EQ(size_of(id), st.st_size) TH_LOG("file %u", id);
	ASSERT_EQ(id, lseek(fd, 0, SEEK_CUR)) TH_LOG("file %u", id);
	if (has_data(id))
		ASSERT_EQ(-1, lu_pattern_verify(fd, SEED_BASE + id, 0, PAGE))
			TH_LOG("file %u", id);
}

/* Retrieves @id's file from @session and checks that it is whole. */
static void retrieve_identity(struct __test_metadata *_metadata, int session,
			      unsigned int id)
{
	int fd = lu_retrieve(session, token_of(id));

	ASSERT_LE(0, fd) TH_LOG("file %u: %d", id, fd);
	check_identity(_metadata, fd, id);
	close(fd);
}

static void raise_fd_limit(struct __test_metadata *_metadata)
{
	struct rlimit lim = { .rlim_cur = 4096, .rlim_max = 4096 };

	ASSERT_EQ(0, setrlimit(RLIMIT_NOFILE, &lim));
}

TEST(kernel1_hand_over_100k_files_and_a_10k_chain)
{
	static int sessions[MAX_SESSIONS];
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
	struct liveupdate_get_state st;
	unsigned int s, f, id;
	int dev, chain, fd;
	uint64_t dep;

	read_shape(_metadata);
	raise_fd_limit(_metadata);
	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	for (s = 0; s < nr_sessions; s++) {
		session_name(name, sizeof(name), s);
		sessions[s] = lu_create_session(dev, name);
		ASSERT_LE(0, sessions[s]) TH_LOG("session %u", s);
		for (f = 0; f < PER_SESSION; f++) {
			id = identity(s, f);
			fd = identity_memfd(id);
			ASSERT_LE(0, fd) TH_LOG("file %u", id);
			ASSERT_EQ(0, lu_preserve(sessions[s], fd, token_of(id)))
				TH_LOG("file %u", id);
			close(fd);
		}
	}
	/* Token i needs token i - 1: dependency order is 10,000 deep. */
	chain = lu_create_session(dev, CHAIN_NAME);
	ASSERT_LE(0, chain);
	for (id = 0; id < chain_len; id++) {
		fd = identity_memfd(id);
		ASSERT_LE(0, fd);
		dep = token_of(id - 1);
		ASSERT_EQ(0, lu_preserve_deps(chain, fd, token_of(id), &dep,
					      id > 0)) TH_LOG("chain %u", id);
		close(fd);
	}
	ASSERT_EQ(0, lu_get_state(dev, &st));
	EXPECT_EQ(nr_sessions + 1, st.nr_sessions);
	EXPECT_EQ(nr_sessions * PER_SESSION + chain_len, st.nr_files);

	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_FREEZE, NULL));
	/* The module holds the sessions until the kexec. */
	for (s = 0; s < nr_sessions; s++)
		close(sessions[s]);
	close(chain);
	close(dev);
}

TEST(kernel2_every_file_comes_back)
{
	char name[LIVEUPDATE_SESSION_NAME_LENGTH];
	struct liveupdate_get_state st;
	int dev, session;
	unsigned int s, f, id;

	read_shape(_metadata);
	raise_fd_limit(_metadata);
	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	ASSERT_EQ(0, lu_get_state(dev, &st));
	ASSERT_EQ(nr_sessions + 1, st.nr_incoming_sessions);
	ASSERT_EQ(nr_sessions * PER_SESSION + chain_len, st.nr_incoming_files);

	/* Sessions in an order other than their creation's. */
	for (s = 0; s < nr_sessions; s++) {
		unsigned int which = (s * 7) % nr_sessions;

		session_name(name, sizeof(name), which);
		session = lu_retrieve_session(dev, name);
		ASSERT_LE(0, session) TH_LOG("session %u: %d", which, session);
		for (f = 0; f < PER_SESSION; f++)
			retrieve_identity(_metadata, session,
					  identity(which, (f * 3) % PER_SESSION));
		ASSERT_EQ(0, lu_finish(session));
		close(session);
	}

	/* The last file of the chain brings the other 9,999 with it. */
	session = lu_retrieve_session(dev, CHAIN_NAME);
	ASSERT_LE(0, session);
	retrieve_identity(_metadata, session, chain_len - 1);
	for (id = 0; id < chain_len - 1; id++)
		retrieve_identity(_metadata, session, id);
	ASSERT_EQ(0, lu_finish(session));
	close(session);

	ASSERT_EQ(0, lu_get_state(dev, &st));
	EXPECT_EQ(0U, st.nr_incoming_sessions);
	EXPECT_EQ(0U, st.nr_incoming_files);
	close(dev);
}

int main(int argc, char **argv)
{
	return lu_staged_main(argc, argv);
}
