// SPDX-License-Identifier: GPL-2.0
/*
 * memfds carried across three kernels: preserved in the first, retrieved,
 * checked, changed and preserved again in the second, checked in the
 * third; one of them in transparent huge pages, one partly swapped out
 * when it is prepared (the guest's scratch disk, /dev/vda, is the swap).
 * A long retrieve in one session does not hold up other sessions'
 * retrieves, nor the device's ioctls.
 * Each test runs in the stage its name says (LU_STAGE, set by the QEMU
 * runner).
 */
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "lu_util.h"
#include "lu_stage.h"

#define SESSION		"c-memfds"
#define CLOSED_SESSION	"c-closed"
#define SLOW_SESSION	"c-slow"
#define BESIDE_SESSION	"c-beside"
#define SLOW_TOKEN	777	/* test_slow_retrieve makes it last 5 s */
#define PAGE		4096L
#define MIB		(1024L * 1024)

enum {
	TOKEN_EMPTY = 1,
	TOKEN_PAGE,
	TOKEN_ODD,
	TOKEN_SPARSE,
	TOKEN_FULL,
	TOKEN_SEALED,
	TOKEN_FALLOCATED,
	TOKEN_HUGE,
	TOKEN_SWAPPED,
	NR_TOKENS = TOKEN_SWAPPED,
};

#define ODD_SIZE	12345
#define ODD_POS		777
#define SPARSE_SIZE	(64 * MIB)
#define FULL_SIZE	(16 * MIB)
#define SEALED_SIZE	(2 * PAGE)
#define SEALS		(F_SEAL_GROW | F_SEAL_SHRINK)
#define FALLOC_SIZE	MIB
#define HUGE_SIZE	(4 * MIB)
#define SHMEM_ENABLED	"/sys/kernel/mm/transparent_hugepage/shmem_enabled"
#define SWAPPED_SIZE	(16 * MIB)

/* The last sparse page is written into a hole after preservation. */
static const off_t sparse_pages[] = { 0, 17 * MIB + 3 * PAGE, 40 * MIB, SPARSE_SIZE - PAGE };
#define NR_SPARSE	4
#define LATE_SPARSE	2


/* Seed of token @t's data in kernel @k: token 2 changes in kernel 2. */
static uint32_t seed(int t, int k)
{
	return t == TOKEN_PAGE && k >= 2 ? 22 : t;
}

/*
 * Fills @fd with shmem's huge pages forced on, so that its folios are
 * PMD-sized (order 9 here): preserved as such, restored by copy.
 */
static void write_huge(struct __test_metadata *_metadata, int fd)
{
	long before = lu_meminfo_kb("ShmemHugePages:");

	ASSERT_EQ(0, lu_write_str(SHMEM_ENABLED, "always"));
	ASSERT_EQ(0, lu_pattern_write(fd, TOKEN_HUGE, 0, HUGE_SIZE));
	ASSERT_EQ(0, lu_write_str(SHMEM_ENABLED, "never"));
	ASSERT_EQ(before + HUGE_SIZE / 1024, lu_meminfo_kb("ShmemHugePages:"));
}

/*
 * Swaps out the first half of @fd's pages (MADV_PAGEOUT), so that the
 * PREPARE in the reboot notifier finds them in swap.
 */
static void swap_out_half(struct __test_metadata *_metadata, int fd)
{
	long used;
	void *map;

	ASSERT_EQ(0, lu_swap_on());
	map = mmap(NULL, SWAPPED_SIZE / 2, PROT_READ, MAP_SHARED | MAP_POPULATE,
		   fd, 0);
	ASSERT_NE(MAP_FAILED, map);
	ASSERT_EQ(0, madvise(map, SWAPPED_SIZE / 2, MADV_PAGEOUT));
	munmap(map, SWAPPED_SIZE / 2);
	used = lu_meminfo_kb("SwapTotal:") - lu_meminfo_kb("SwapFree:");
	ASSERT_LE(SWAPPED_SIZE / 4 / 1024, used);
}

static int make_memfds(struct __test_metadata *_metadata, int *fds)
{
	int i;

	for (i = 1; i <= NR_TOKENS; i++) {
		fds[i] = memfd_create("lu-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		ASSERT_LE(0, fds[i]);
	}
	ASSERT_EQ(0, lu_pattern_write(fds[TOKEN_PAGE], seed(TOKEN_PAGE, 1), 0, PAGE));
	ASSERT_EQ(0, lu_pattern_write(fds[TOKEN_ODD], TOKEN_ODD, 0, ODD_SIZE));
	ASSERT_EQ(ODD_POS, lseek(fds[TOKEN_ODD], ODD_POS, SEEK_SET));
	ASSERT_EQ(0, ftruncate(fds[TOKEN_SPARSE], SPARSE_SIZE));
	for (i = 0; i < NR_SPARSE; i++)
		if (i != LATE_SPARSE)
			ASSERT_EQ(0, lu_pattern_write(fds[TOKEN_SPARSE], TOKEN_SPARSE,
						      sparse_pages[i], PAGE));
	ASSERT_EQ(0, lu_pattern_write(fds[TOKEN_FULL], TOKEN_FULL, 0, FULL_SIZE));
	ASSERT_EQ(0, lu_pattern_write(fds[TOKEN_SEALED], TOKEN_SEALED, 0, SEALED_SIZE));
	ASSERT_EQ(0, fcntl(fds[TOKEN_SEALED], F_ADD_SEALS, SEALS));
	ASSERT_EQ(0, fallocate(fds[TOKEN_FALLOCATED], 0, 0, FALLOC_SIZE));
	ASSERT_EQ(0, lu_pattern_write(fds[TOKEN_FALLOCATED], TOKEN_FALLOCATED, 0, PAGE));
	write_huge(_metadata, fds[TOKEN_HUGE]);
	ASSERT_EQ(0, lu_pattern_write(fds[TOKEN_SWAPPED], TOKEN_SWAPPED, 0,
				      SWAPPED_SIZE));
	return 0;
}

static void check_memfds(struct __test_metadata *_metadata, int *fds, int k)
{
	struct stat st;
	int i;

	ASSERT_EQ(0, fstat(fds[TOKEN_EMPTY], &st));
	EXPECT_EQ(0, st.st_size);

	EXPECT_EQ(-1, lu_pattern_verify(fds[TOKEN_PAGE], seed(TOKEN_PAGE, k), 0, PAGE));

	ASSERT_EQ(0, fstat(fds[TOKEN_ODD], &st));
	EXPECT_EQ(ODD_SIZE, st.st_size);
	EXPECT_EQ(-1, lu_pattern_verify(fds[TOKEN_ODD], TOKEN_ODD, 0, ODD_SIZE));
	EXPECT_EQ(ODD_POS, lseek(fds[TOKEN_ODD], 0, SEEK_CUR));

	/* Holes stay holes: four pages of data, found where they were. */
	ASSERT_EQ(0, fstat(fds[TOKEN_SPARSE], &st));
	EXPECT_EQ(SPARSE_SIZE, st.st_size);
	EXPECT_EQ(NR_SPARSE * PAGE / 512, st.st_blocks);
	for (i = 0; i < NR_SPARSE; i++) {
		EXPECT_EQ(sparse_pages[i],
			  lseek(fds[TOKEN_SPARSE], i ? sparse_pages[i - 1] + PAGE : 0,
				SEEK_DATA));
		EXPECT_EQ(sparse_pages[i] + PAGE,
			  lseek(fds[TOKEN_SPARSE], sparse_pages[i], SEEK_HOLE));
		EXPECT_EQ(-1, lu_pattern_verify(fds[TOKEN_SPARSE], TOKEN_SPARSE,
						sparse_pages[i], PAGE));
	}

	EXPECT_EQ(-1, lu_pattern_verify(fds[TOKEN_FULL], TOKEN_FULL, 0, FULL_SIZE));

	EXPECT_EQ(SEALS, fcntl(fds[TOKEN_SEALED], F_GET_SEALS));
	EXPECT_EQ(-1, lu_pattern_verify(fds[TOKEN_SEALED], TOKEN_SEALED, 0, SEALED_SIZE));
	EXPECT_EQ(-1, ftruncate(fds[TOKEN_SEALED], 0));
	EXPECT_EQ(EPERM, errno);

	/* Fallocated but never written pages come back as holes. */
	ASSERT_EQ(0, fstat(fds[TOKEN_FALLOCATED], &st));
	EXPECT_EQ(FALLOC_SIZE, st.st_size);
	EXPECT_EQ(PAGE / 512, st.st_blocks);
	EXPECT_EQ(-1, lu_pattern_verify(fds[TOKEN_FALLOCATED], TOKEN_FALLOCATED, 0, PAGE));

	ASSERT_EQ(0, fstat(fds[TOKEN_HUGE], &st));
	EXPECT_EQ(HUGE_SIZE, st.st_size);
	EXPECT_EQ(-1, lu_pattern_verify(fds[TOKEN_HUGE], TOKEN_HUGE, 0, HUGE_SIZE));

	EXPECT_EQ(-1, lu_pattern_verify(fds[TOKEN_SWAPPED], TOKEN_SWAPPED, 0,
					SWAPPED_SIZE));
}

static void preserve_all(struct __test_metadata *_metadata, int dev, int *fds)
{
	int session, i;

	session = lu_create_session(dev, SESSION);
	ASSERT_LE(0, session);
	for (i = 1; i <= NR_TOKENS; i++)
		ASSERT_EQ(0, lu_preserve(session, fds[i], i));
}

static void retrieve_all(struct __test_metadata *_metadata, int dev, int *fds,
			 int *sessionp)
{
	int session, i;

	session = lu_retrieve_session(dev, SESSION);
	ASSERT_LE(0, session);
	for (i = 1; i <= NR_TOKENS; i++) {
		fds[i] = lu_retrieve(session, i);
		ASSERT_LE(0, fds[i]);
		EXPECT_EQ(FD_CLOEXEC, fcntl(fds[i], F_GETFD));
	}
	*sessionp = session;
}

/* A session of one page of @token's pattern, its fds left open. */
static void preserve_page(struct __test_metadata *_metadata, int dev,
			  const char *name, int token)
{
	int session, fd;

	session = lu_create_session(dev, name);
	ASSERT_LE(0, session);
	fd = lu_pattern_memfd(PAGE, token);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, lu_preserve(session, fd, token));
}

/* Retrieves @token's page and checks it; the session is finished. */
static int retrieve_page(int session, int token)
{
	int fd = lu_retrieve(session, token);

	if (fd < 0)
		return fd;
	if (lu_pattern_verify(fd, token, 0, PAGE) != -1)
		return -EIO;
	close(fd);
	return lu_finish(session);
}

TEST(kernel1_preserve)
{
	int fds[NR_TOKENS + 1];
	int dev, closed, fd;

	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	make_memfds(_metadata, fds);
	preserve_all(_metadata, dev, fds);
	swap_out_half(_metadata, fds[TOKEN_SWAPPED]);
	/* Written into a hole after preservation: carried too. */
	ASSERT_EQ(0, lu_pattern_write(fds[TOKEN_SPARSE], TOKEN_SPARSE,
				      sparse_pages[LATE_SPARSE], PAGE));

	/* A session closed before the kexec leaves nothing behind. */
	closed = lu_create_session(dev, CLOSED_SESSION);
	ASSERT_LE(0, closed);
	fd = memfd_create("closed", 0);
	ASSERT_EQ(0, lu_pattern_write(fd, 99, 0, PAGE));
	ASSERT_EQ(0, lu_preserve(closed, fd, 1));
	ASSERT_EQ(0, close(closed));

	/* One page each: only the debug knob makes the first one slow. */
	preserve_page(_metadata, dev, SLOW_SESSION, SLOW_TOKEN);
	preserve_page(_metadata, dev, BESIDE_SESSION, 1);

	ASSERT_EQ(0, lu_hold_fds_until_kexec());
}

/*
 * While a child retrieves the slow file (5 s, its session's lock held),
 * another session is retrieved and finished, an outgoing session
 * created, and the state read: all before the child is done. (First in
 * kernel 2: the next test leaves the device held open.)
 */
TEST(kernel2_retrieve_beside_a_slow_one)
{
	struct liveupdate_get_state st;
	int dev, slow, beside, created, done[2], status;
	struct pollfd pfd;
	pid_t child;

	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	slow = lu_retrieve_session(dev, SLOW_SESSION);
	ASSERT_LE(0, slow);
	ASSERT_EQ(0, lu_set_param("test_slow_retrieve", SLOW_TOKEN));
	ASSERT_EQ(0, pipe(done));
	child = fork();
	ASSERT_LE(0, child);
	if (!child) {
		close(done[0]);
		status = retrieve_page(slow, SLOW_TOKEN);
		write(done[1], "x", 1);
		_exit(status ? 1 : 0);
	}
	close(done[1]);
	sleep(1);

	beside = lu_retrieve_session(dev, BESIDE_SESSION);
	ASSERT_LE(0, beside);
	EXPECT_EQ(0, retrieve_page(beside, 1));
	created = lu_create_session(dev, "c-created");
	ASSERT_LE(0, created);
	EXPECT_EQ(0, lu_get_state(dev, &st));
	pfd = (struct pollfd){ .fd = done[0], .events = POLLIN };
	EXPECT_EQ(0, poll(&pfd, 1, 0)) {
		TH_LOG("the other session's work waited for the slow retrieve");
	}

	ASSERT_EQ(child, waitpid(child, &status, 0));
	EXPECT_EQ(0, status);
	EXPECT_EQ(0, lu_set_param("test_slow_retrieve", 0));
	close(done[0]);
	close(created);
	close(beside);
	close(slow);
	close(dev);
}

TEST(kernel2_check_and_preserve_again)
{
	int fds[NR_TOKENS + 1];
	struct stat st, st_again;
	int dev, session, early, again;

	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	EXPECT_EQ(-ENOENT, lu_retrieve_session(dev, CLOSED_SESSION));
	retrieve_all(_metadata, dev, fds, &session);
	check_memfds(_metadata, fds, 1);
	EXPECT_EQ(-EINVAL, lu_retrieve_session(dev, SESSION));
	EXPECT_EQ(-EINVAL, lu_preserve(session, fds[TOKEN_PAGE], 99));
	EXPECT_EQ(-ENOENT, lu_retrieve(session, 99));

	/* Retrieving again gives another fd for the same file. */
	again = lu_retrieve(session, TOKEN_FULL);
	ASSERT_LE(0, again);
	ASSERT_EQ(0, fstat(again, &st_again));
	ASSERT_EQ(0, fstat(fds[TOKEN_FULL], &st));
	EXPECT_EQ(st.st_ino, st_again.st_ino);
	close(again);

	/* A retrieved file is busy until its session is finished. */
	early = lu_create_session(dev, "c-early");
	ASSERT_LE(0, early);
	ASSERT_EQ(-EBUSY, lu_preserve(early, fds[TOKEN_PAGE], 1));
	ASSERT_EQ(0, close(early));
	ASSERT_EQ(0, lu_finish(session));
	EXPECT_EQ(-ENOENT, lu_retrieve(session, TOKEN_PAGE));
	ASSERT_EQ(0, lu_finish(session));

	ASSERT_EQ(0, lu_pattern_write(fds[TOKEN_PAGE], seed(TOKEN_PAGE, 2), 0, PAGE));
	preserve_all(_metadata, dev, fds);
	ASSERT_EQ(0, lu_hold_fds_until_kexec());
}

TEST(kernel3_check)
{
	int fds[NR_TOKENS + 1];
	int dev, session;

	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	EXPECT_EQ(-ENOENT, lu_retrieve_session(dev, "c-early"));
	retrieve_all(_metadata, dev, fds, &session);
	check_memfds(_metadata, fds, 2);
	ASSERT_EQ(0, lu_finish(session));
}

int main(int argc, char **argv)
{
	return lu_staged_main(argc, argv);
}
