// SPDX-License-Identifier: GPL-2.0
/*
 * A restored memfd holds the very pages that were preserved, and is an
 * ordinary memfd again, three kernels:
 *  1. a memfd is preserved, PREPARE pins its pages (which may move them
 *     out of movable memory first), FREEZE; the page frame of every page,
 *     read from /proc/self/pagemap, is left in LU_OUT for kernel 2.
 *  2. retrieved in a memory cgroup of its own: every page has the frame
 *     it had (the test names those that do not), the data is intact,
 *     the cgroup's shmem and memory.current count the pages; then the
 *     file behaves as a memfd: seals, writes through a shared mapping,
 *     a punched hole, growing, swapping out and in; preserved again.
 *  3. what kernel 2 left is carried by a second kexec.
 * Each test runs in the stage its name says (LU_STAGE).
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/swap.h>

#include "kselftest_harness.h"
#include "lu_util.h"
#include "lu_stage.h"
#include "lu_expect.h"

#define SESSION		"zc"
#define TOKEN		1
#define PAGE		4096L
#define NR_PAGES	2048L		/* 8 MiB */
#define SIZE		(NR_PAGES * PAGE)
#define SEED		71
#define SEED_AGAIN	72		/* the page kernel 2 writes through a mapping */
#define HOLE_PAGE	10
#define WRITTEN_PAGE	20
#define SEALS		(F_SEAL_SHRINK)
#define FRAMES		"/run/out/zerocopy-frames"
#define CGROUP		"/sys/fs/cgroup/lu-zerocopy"
#define SWAP_DEVICE	"/dev/vda"
#define PM_PRESENT	(1ULL << 63)
#define PM_PFN		((1ULL << 55) - 1)

/* Reads the page frame of each page of @fd into @pfns (0: not present). */
static void read_frames(struct __test_metadata *_metadata, int fd,
			uint64_t *pfns)
{
	uint64_t entry;
	uint8_t *map;
	long i;
	int pm;

	map = mmap(NULL, SIZE, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
	ASSERT_NE(MAP_FAILED, map);
	pm = open("/proc/self/pagemap", O_RDONLY);
	ASSERT_LE(0, pm);
	for (i = 0; i < NR_PAGES; i++) {
		off_t at = ((uintptr_t)map / PAGE + i) * sizeof(entry);

		ASSERT_EQ((ssize_t)sizeof(entry), pread(pm, &entry, sizeof(entry), at));
		pfns[i] = entry & PM_PRESENT ? entry & PM_PFN : 0;
	}
	close(pm);
	munmap(map, SIZE);
}

static long long cgroup_value(const char *file)
{
	char path[128], buf[64];
	int fd, n;

	snprintf(path, sizeof(path), CGROUP "/%s", file);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	return atoll(buf);
}

/* The "shmem" line of the cgroup's memory.stat, in bytes, or -1. */
static long long cgroup_shmem(void)
{
	long long value = -1;
	char line[128];
	FILE *f = fopen(CGROUP "/memory.stat", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "shmem %lld", &value) == 1)
			break;
	fclose(f);
	return value;
}

/* Moves this process into a memory cgroup of its own. */
static void enter_cgroup(struct __test_metadata *_metadata)
{
	if (access("/sys/fs/cgroup/cgroup.procs", F_OK))
		ASSERT_EQ(0, system("mount -t cgroup2 cgroup2 /sys/fs/cgroup"));
	ASSERT_EQ(0, lu_write_str("/sys/fs/cgroup/cgroup.subtree_control", "+memory"));
	ASSERT_EQ(0, mkdir(CGROUP, 0755));
	ASSERT_EQ(0, lu_write_str(CGROUP "/cgroup.procs", "0"));
}

/* Opens the device into *@dev and retrieves the memfd (*@session: its session). */
static int retrieve_memfd(struct __test_metadata *_metadata, int *dev, int *session)
{
	int fd;

	*dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, *dev);
	*session = lu_retrieve_session(*dev, SESSION);
	ASSERT_LE(0, *session);
	fd = lu_retrieve(*session, TOKEN);
	ASSERT_LE(0, fd);
	return fd;
}

TEST(kernel1_preserve_and_record)
{
	uint64_t pfns[NR_PAGES];
	int dev, session, fd, out;
	long i;

	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	fd = memfd_create("zerocopy", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, lu_pattern_write(fd, SEED, 0, SIZE));
	ASSERT_EQ(0, fcntl(fd, F_ADD_SEALS, SEALS));
	session = lu_create_session(dev, SESSION);
	ASSERT_LE(0, session);
	ASSERT_EQ(0, lu_preserve(session, fd, TOKEN));
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_FREEZE, NULL));
	/* Pinned since PREPARE: these frames are the ones handed over. */
	read_frames(_metadata, fd, pfns);
	for (i = 0; i < NR_PAGES; i++)
		ASSERT_NE(0ULL, pfns[i]);
	out = open(FRAMES, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ASSERT_LE(0, out);
	ASSERT_EQ((ssize_t)sizeof(pfns), write(out, pfns, sizeof(pfns)));
	close(out);
	ASSERT_EQ(0, lu_hold_fds_until_kexec());
}

TEST(kernel2_same_pages_then_an_ordinary_memfd)
{
	uint64_t before[NR_PAGES], after[NR_PAGES];
	long moved = 0, i;
	long long charged;
	int dev, session, fd, in;
	uint8_t *map;

	in = open(FRAMES, O_RDONLY);
	ASSERT_LE(0, in);
	ASSERT_EQ((ssize_t)sizeof(before), read(in, before, sizeof(before)));
	close(in);

	enter_cgroup(_metadata);
	charged = cgroup_value("memory.current");
	fd = retrieve_memfd(_metadata, &dev, &session);

	read_frames(_metadata, fd, after);
	for (i = 0; i < NR_PAGES; i++) {
		if (after[i] == before[i])
			continue;
		if (moved++ < 8)
			TH_LOG("page %ld: frame %#llx before the kexec, %#llx after",
			       i, (unsigned long long)before[i],
			       (unsigned long long)after[i]);
	}
	EXPECT_EQ(0, moved) TH_LOG("%ld of %ld pages are copies", moved, NR_PAGES);
	EXPECT_EQ(-1LL, lu_pattern_verify(fd, SEED, 0, SIZE));
	/*
	 * Counted as shmem and charged to the retriever's cgroup. (Not the
	 * global Shmem: other tmpfs files come and go meanwhile.)
	 */
	EXPECT_LE(charged + SIZE, cgroup_value("memory.current"));
	EXPECT_LE(SIZE, cgroup_shmem());

	/* An ordinary memfd: its seals, writes through a shared mapping, a hole. */
	EXPECT_EQ(SEALS, fcntl(fd, F_GET_SEALS));
	EXPECT_EQ(-1, ftruncate(fd, SIZE / 2));
	EXPECT_EQ(0, fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL) ? errno : 0);
	map = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	ASSERT_NE(MAP_FAILED, map);
	lu_pattern_fill(map + WRITTEN_PAGE * PAGE, PAGE, SEED_AGAIN, WRITTEN_PAGE * PAGE);
	ASSERT_EQ(0, fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			       HOLE_PAGE * PAGE, PAGE));
	for (i = 0; i < PAGE; i++)
		ASSERT_EQ(0, map[HOLE_PAGE * PAGE + i]);

	/* Swapped out and back in with the rest of shmem. */
	ASSERT_EQ(0, system("mkswap " SWAP_DEVICE " >/dev/null"));
	ASSERT_EQ(0, swapon(SWAP_DEVICE, 0));
	ASSERT_EQ(0, madvise(map, SIZE, MADV_PAGEOUT));
	EXPECT_LE(SIZE / 2 / 1024, lu_meminfo_kb("SwapTotal:") - lu_meminfo_kb("SwapFree:"));
	EXPECT_EQ(-1LL, lu_pattern_check(map, HOLE_PAGE * PAGE, SEED, 0));
	EXPECT_EQ(-1LL, lu_pattern_check(map + WRITTEN_PAGE * PAGE, PAGE, SEED_AGAIN,
					 WRITTEN_PAGE * PAGE));
	munmap(map, SIZE);
	ASSERT_EQ(0, swapoff(SWAP_DEVICE));
	ASSERT_EQ(0, lu_finish(session));
	ASSERT_EQ(0, ftruncate(fd, SIZE + PAGE));

	/* Preserved again, as any memfd. */
	session = lu_create_session(dev, SESSION);
	ASSERT_LE(0, session);
	ASSERT_EQ(0, lu_preserve(session, fd, TOKEN));
	ASSERT_EQ(0, lu_hold_fds_until_kexec());
}

TEST(kernel3_carried_again)
{
	uint8_t zero[PAGE] = { 0 }, buf[PAGE];
	int dev, session, fd;

	fd = retrieve_memfd(_metadata, &dev, &session);
	EXPECT_EQ(SEALS | F_SEAL_SEAL, fcntl(fd, F_GET_SEALS));
	EXPECT_EQ(-1LL, lu_pattern_verify(fd, SEED, 0, HOLE_PAGE * PAGE));
	ASSERT_EQ(PAGE, pread(fd, buf, PAGE, HOLE_PAGE * PAGE));
	EXPECT_EQ(0, memcmp(buf, zero, PAGE));
	EXPECT_EQ(-1LL, lu_pattern_verify(fd, SEED_AGAIN, WRITTEN_PAGE * PAGE, PAGE));
	EXPECT_EQ(-1LL, lu_pattern_verify(fd, SEED, (WRITTEN_PAGE + 1) * PAGE,
					  SIZE - (WRITTEN_PAGE + 1) * PAGE));
	ASSERT_EQ(0, lu_finish(session));
}

int main(int argc, char **argv)
{
	return lu_staged_main(argc, argv);
}
