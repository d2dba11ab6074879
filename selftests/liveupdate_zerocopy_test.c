// SPDX-License-Identifier: GPL-2.0
/*
 * A restored memfd holds the very pages that were preserved, and is an
 * ordinary memfd again, three kernels:
 *  1. a memfd of small pages and one of 2 MiB transparent huge pages
 *     (shmem_enabled=always while it is written) are preserved; a
 *     PREPARE failing halfway leaves nothing pinned; the next pins
 *     their pages (which may move them out of movable memory first),
 *     FREEZE; the page frame of every page, read from
 *     /proc/self/pagemap, is left in LU_OUT for kernel 2.
 *  2. retrieved in a memory cgroup of its own (the small pages' after
 *     a retrieval failing halfway), with their names (readlink of
 *     /proc/self/fd/N): every page has the frame
 *     it had (the test names those that do not), the huge pages are
 *     still huge (/proc/kpageflags) though this kernel's shmem_enabled
 *     is "never", the data is intact, the cgroup's shmem, shmem_thp and
 *     memory.current count the pages; then the files behave as memfds:
 *     seals, writes through a shared mapping, punched holes (one splits
 *     a huge page), growing, swapping out and in; preserved again.
 *  3. what kernel 2 left is carried by a second kexec.
 * Each test runs in the stage its name says (LU_STAGE).
 */
#include <sys/mman.h>
#include <sys/stat.h>

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
#define FAILING_PAGE	1500		/* counted across the tasks of PREPARE or retrieve */
#define WRITTEN_PAGE	20
#define SEALS		(F_SEAL_SHRINK)
#define HUGE_TOKEN	2
#define HUGE_SEED	73
#define HUGE_HOLE_PAGE	600		/* inside the second huge page */
#define THP_SHMEM	"/sys/kernel/mm/transparent_hugepage/shmem_enabled"
#define KPF_THP		(1ULL << 22)
#define FRAMES		"/run/out/zerocopy-frames"
#define NAME		"/memfd:zerocopy (deleted)"
#define HUGE_NAME	"/memfd:zerocopy-huge (deleted)"
#define CGROUP		"/sys/fs/cgroup/lu-zerocopy"
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

/* A line of the cgroup's memory.stat ("shmem", "shmem_thp"), in bytes, or -1. */
static long long cgroup_stat(const char *name)
{
	long long value = -1, v;
	char line[128], key[64];
	FILE *f = fopen(CGROUP "/memory.stat", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%63s %lld", key, &v) == 2 && !strcmp(key, name))
			value = v;
	fclose(f);
	return value;
}

/* How many of the @n frames in @pfns are parts of transparent huge pages. */
static long thp_pages(struct __test_metadata *_metadata, const uint64_t *pfns, long n)
{
	uint64_t flags;
	long i, thp = 0;
	int kpf;

	kpf = open("/proc/kpageflags", O_RDONLY);
	ASSERT_LE(0, kpf);
	for (i = 0; i < n; i++) {
		ASSERT_EQ((ssize_t)sizeof(flags),
			  pread(kpf, &flags, sizeof(flags), pfns[i] * sizeof(flags)));
		thp += !!(flags & KPF_THP);
	}
	close(kpf);
	return thp;
}

/* Compares the frames of @n pages before and after; returns how many moved. */
static long moved_pages(struct __test_metadata *_metadata, const char *what,
			const uint64_t *before, const uint64_t *after, long n)
{
	long moved = 0, i;

	for (i = 0; i < n; i++) {
		if (after[i] == before[i])
			continue;
		if (moved++ < 8)
			TH_LOG("%s page %ld: frame %#llx before the kexec, %#llx after",
			       what, i, (unsigned long long)before[i],
			       (unsigned long long)after[i]);
	}
	return moved;
}

/* The name the file behind @fd shows in /proc/self/fd. */
static void expect_name(struct __test_metadata *_metadata, int fd, const char *want)
{
	char path[64], link[256];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof(link) - 1);
	ASSERT_LT(0, n);
	link[n] = 0;
	EXPECT_STREQ(want, link);
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
	uint64_t pfns[2 * NR_PAGES];
	struct liveupdate_get_state st;
	int dev, session, fd, huge, out;
	long long pins;
	long i;

	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	fd = memfd_create("zerocopy", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, lu_pattern_write(fd, SEED, 0, SIZE));
	ASSERT_EQ(0, fcntl(fd, F_ADD_SEALS, SEALS));
	ASSERT_EQ(0, lu_write_str(THP_SHMEM, "always"));
	huge = memfd_create("zerocopy-huge", MFD_CLOEXEC);
	ASSERT_LE(0, huge);
	ASSERT_EQ(0, lu_pattern_write(huge, HUGE_SEED, 0, SIZE));
	ASSERT_EQ(0, lu_write_str(THP_SHMEM, "never"));
	expect_name(_metadata, fd, NAME);
	expect_name(_metadata, huge, HUGE_NAME);
	session = lu_create_session(dev, SESSION);
	ASSERT_LE(0, session);
	ASSERT_EQ(0, lu_preserve(session, fd, TOKEN));
	ASSERT_EQ(0, lu_preserve(session, huge, HUGE_TOKEN));
	/*
	 * PREPARE pins and preserves each file in slices, one per task: one
	 * page failing in any of them undoes all, and the retry succeeds.
	 */
	pins = lu_pins_held();
	ASSERT_EQ(0, lu_set_param("test_fail_folio", FAILING_PAGE));
	EXPECT_EQ(-ENOMEM, lu_event(dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	ASSERT_EQ(0, lu_get_state(dev, &st));
	EXPECT_EQ((__u32)LIVEUPDATE_STATE_NORMAL, st.state);
	EXPECT_EQ(pins, lu_pins_held());
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_FREEZE, NULL));
	/* Pinned since PREPARE: these frames are the ones handed over. */
	read_frames(_metadata, fd, pfns);
	read_frames(_metadata, huge, pfns + NR_PAGES);
	for (i = 0; i < 2 * NR_PAGES; i++)
		ASSERT_NE(0ULL, pfns[i]);
	ASSERT_EQ(NR_PAGES, thp_pages(_metadata, pfns + NR_PAGES, NR_PAGES));
	out = open(FRAMES, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ASSERT_LE(0, out);
	ASSERT_EQ((ssize_t)sizeof(pfns), write(out, pfns, sizeof(pfns)));
	close(out);
	ASSERT_EQ(0, lu_hold_fds_until_kexec());
}

TEST(kernel2_same_pages_then_an_ordinary_memfd)
{
	uint64_t before[2 * NR_PAGES], after[2 * NR_PAGES];
	uint8_t zero[PAGE] = { 0 }, buf[PAGE];
	int dev, session, fd, huge, in;
	long long charged;
	uint8_t *map;
	long moved, i;

	in = open(FRAMES, O_RDONLY);
	ASSERT_LE(0, in);
	ASSERT_EQ((ssize_t)sizeof(before), read(in, before, sizeof(before)));
	close(in);

	enter_cgroup(_metadata);
	charged = cgroup_value("memory.current");
	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	session = lu_retrieve_session(dev, SESSION);
	ASSERT_LE(0, session);
	/*
	 * Its ranges are restored by several tasks at once: one page failing
	 * in any of them fails the retrieval, which keeps what was done, and
	 * the retry finishes the rest (every frame is checked below).
	 */
	ASSERT_EQ(0, lu_set_param("test_fail_folio", FAILING_PAGE));
	EXPECT_EQ(-ENOMEM, lu_retrieve(session, TOKEN));
	fd = lu_retrieve(session, TOKEN);
	ASSERT_LE(0, fd);
	huge = lu_retrieve(session, HUGE_TOKEN);
	ASSERT_LE(0, huge);
	expect_name(_metadata, fd, NAME);
	expect_name(_metadata, huge, HUGE_NAME);

	read_frames(_metadata, fd, after);
	read_frames(_metadata, huge, after + NR_PAGES);
	moved = moved_pages(_metadata, "small", before, after, NR_PAGES);
	EXPECT_EQ(0, moved) TH_LOG("%ld of %ld small pages are copies", moved, NR_PAGES);
	moved = moved_pages(_metadata, "huge", before + NR_PAGES, after + NR_PAGES, NR_PAGES);
	EXPECT_EQ(0, moved) TH_LOG("%ld of %ld huge pages' pages are copies", moved, NR_PAGES);
	EXPECT_EQ(NR_PAGES, thp_pages(_metadata, after + NR_PAGES, NR_PAGES));
	EXPECT_EQ(-1LL, lu_pattern_verify(fd, SEED, 0, SIZE));
	EXPECT_EQ(-1LL, lu_pattern_verify(huge, HUGE_SEED, 0, SIZE));
	/*
	 * Counted as shmem (the huge ones as shmem_thp too) and charged to
	 * the retriever's cgroup, new and holding only this process. (Not
	 * the global Shmem: other tmpfs files come and go meanwhile; and the
	 * cgroup's other charges move a few pages either way.)
	 */
	EXPECT_GT(SIZE / 2, charged);
	EXPECT_LE(2 * SIZE, cgroup_value("memory.current"));
	EXPECT_LE(2 * SIZE, cgroup_stat("shmem"));
	EXPECT_LE(SIZE, cgroup_stat("shmem_thp"));

	/* A hole punched into a huge page splits it; the rest stays. */
	ASSERT_EQ(0, fallocate(huge, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			       HUGE_HOLE_PAGE * PAGE, PAGE));
	ASSERT_EQ(PAGE, pread(huge, buf, PAGE, HUGE_HOLE_PAGE * PAGE));
	EXPECT_EQ(0, memcmp(buf, zero, PAGE));
	EXPECT_EQ(-1LL, lu_pattern_verify(huge, HUGE_SEED, 0, HUGE_HOLE_PAGE * PAGE));
	EXPECT_EQ(-1LL, lu_pattern_verify(huge, HUGE_SEED, (HUGE_HOLE_PAGE + 1) * PAGE,
					  SIZE - (HUGE_HOLE_PAGE + 1) * PAGE));

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
	ASSERT_EQ(0, lu_swap_on());
	ASSERT_EQ(0, madvise(map, SIZE, MADV_PAGEOUT));
	EXPECT_LE(SIZE / 2 / 1024, lu_meminfo_kb("SwapTotal:") - lu_meminfo_kb("SwapFree:"));
	EXPECT_EQ(-1LL, lu_pattern_check(map, HOLE_PAGE * PAGE, SEED, 0));
	EXPECT_EQ(-1LL, lu_pattern_check(map + WRITTEN_PAGE * PAGE, PAGE, SEED_AGAIN,
					 WRITTEN_PAGE * PAGE));
	munmap(map, SIZE);
	ASSERT_EQ(0, swapoff(LU_SWAP_DEVICE));
	ASSERT_EQ(0, lu_finish(session));
	ASSERT_EQ(0, ftruncate(fd, SIZE + PAGE));

	/* Preserved again, as any memfd. */
	session = lu_create_session(dev, SESSION);
	ASSERT_LE(0, session);
	ASSERT_EQ(0, lu_preserve(session, fd, TOKEN));
	ASSERT_EQ(0, lu_preserve(session, huge, HUGE_TOKEN));
	ASSERT_EQ(0, lu_hold_fds_until_kexec());
}

TEST(kernel3_carried_again)
{
	uint8_t zero[PAGE] = { 0 }, buf[PAGE];
	int dev, session, fd, huge;

	fd = retrieve_memfd(_metadata, &dev, &session);
	EXPECT_EQ(SEALS | F_SEAL_SEAL, fcntl(fd, F_GET_SEALS));
	EXPECT_EQ(-1LL, lu_pattern_verify(fd, SEED, 0, HOLE_PAGE * PAGE));
	ASSERT_EQ(PAGE, pread(fd, buf, PAGE, HOLE_PAGE * PAGE));
	EXPECT_EQ(0, memcmp(buf, zero, PAGE));
	EXPECT_EQ(-1LL, lu_pattern_verify(fd, SEED_AGAIN, WRITTEN_PAGE * PAGE, PAGE));
	EXPECT_EQ(-1LL, lu_pattern_verify(fd, SEED, (WRITTEN_PAGE + 1) * PAGE,
					  SIZE - (WRITTEN_PAGE + 1) * PAGE));

	huge = lu_retrieve(session, HUGE_TOKEN);
	ASSERT_LE(0, huge);
	expect_name(_metadata, fd, NAME);
	expect_name(_metadata, huge, HUGE_NAME);
	ASSERT_EQ(PAGE, pread(huge, buf, PAGE, HUGE_HOLE_PAGE * PAGE));
	EXPECT_EQ(0, memcmp(buf, zero, PAGE));
	EXPECT_EQ(-1LL, lu_pattern_verify(huge, HUGE_SEED, 0, HUGE_HOLE_PAGE * PAGE));
	EXPECT_EQ(-1LL, lu_pattern_verify(huge, HUGE_SEED, (HUGE_HOLE_PAGE + 1) * PAGE,
					  SIZE - (HUGE_HOLE_PAGE + 1) * PAGE));
	ASSERT_EQ(0, lu_finish(session));
}

int main(int argc, char **argv)
{
	return lu_staged_main(argc, argv);
}
