// SPDX-License-Identifier: GPL-2.0
/*
 * Defects where a session's data was lost or the kernel warned, each
 * proven across real kexecs (four kernels):
 *  1. events with no session at all; a CREATE_SESSION that fails on its
 *     fd while PREPARED leaves no session behind; FREEZE with the Nth
 *     allocation failing, N = 1, 2, ... until it succeeds.
 *  2. that FREEZE carried the page written into a hole after PREPARE; a
 *     RETRIEVE_SESSION that fails on its fd (EMFILE) leaves the session
 *     retrievable. Then sessions for kernel 3: a chain of 2000 dependent
 *     memfds, seals added after PREPARE, changes made after FREEZE,
 *     memfds whose hand-over data is damaged at the kexec or written
 *     wrong, one field each (debug module hooks).
 *  3. each comes back whole: the chain retrieved at once, the copy not
 *     limited by the retriever's RLIMIT_FSIZE, changes after FREEZE, and
 *     a damaged memfd fails the same way on every retry, alone; then
 *     nothing is left, and the kexec hands over nothing.
 *  4. nothing came over.
 */
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "lu_util.h"
#include "lu_fail_nth.h"
#include "lu_stage.h"

#define PAGE		4096ULL
#define MIB		(1024ULL * 1024)
#define CHAIN		2000
#define BIG_SIZE	(2 * MIB)
#define LATE_SIZE	(1 * MIB)
#define LATE_HOLE	(512 * 1024)	/* written after FREEZE */
#define LATE_POS	12345
#define NTH_SIZE	(1024 * 1024)
#define NTH_HOLE	(128 * 1024)	/* written after PREPARE */
#define BIG_SEALS	(F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE)

enum {
	SEED_CHAIN = 100, SEED_BIG = 7, SEED_LATE, SEED_LATE_HOLE, SEED_NTH,
	SEED_NTH_HOLE, SEED_BAD,
};
/* The damage knob names a token in any session: these are unique. */
enum {
	TOKEN_BIG = 1, TOKEN_LATE, TOKEN_NTH, TOKEN_BAD = 0xbad,
	TOKEN_INTACT = 0xda00, TOKEN_DAMAGED,
};

/*
 * Damage, one memfd per entry (debug module hooks). In transit, after the
 * checksums were written (test_damage_memfd): one bit flipped in its
 * hand-over data outside liveupdate's table; bits count through the
 * 16-byte folio records (DAMAGED_PAGES of them: two pages of records),
 * then the first page of the array's page list (its link, then its page
 * addresses). Written wrong, every checksum right (test_miswrite_memfd):
 * one field of its header (or its name after it), which lives in the
 * table, so that only the next kernel's checks of the values can notice.
 * (Damage to the table in transit refuses the whole hand-over: damaged_c
 * shows that.)
 */
#define DAMAGED_PAGES	300
#define RECORDS		(DAMAGED_PAGES * 16)
#define RECORDS_CRC	"folio records checksum mismatch"
#define BAD_SHAPE	"folio array of the wrong shape"
#define ONES		"0xffffffffffffffff"
static const struct {
	const char *what;
	unsigned int bit;	/* in transit, if miswrite is NULL */
	const char *miswrite;	/* FIELD=VALUE or FIELD^=VALUE */
	const char *why;	/* what the next kernel says (NULL: any reason) */
} damages[] = {
	{ "first record's index", 0, NULL, RECORDS_CRC },
	{ "first record's pfn", 8 * 8 + 20, NULL, RECORDS_CRC },
	{ "a middle record's index", (RECORDS / 2) * 8 + 7, NULL, RECORDS_CRC },
	{ "last record's order (second page)", (RECORDS - 8) * 8 + 1, NULL,
	  RECORDS_CRC },
	{ "page list link", RECORDS * 8 + 15, NULL, "folio array cut short" },
	{ "array page address (a neighbour)", (RECORDS + 8) * 8 + 12, NULL,
	  RECORDS_CRC },
	{ "array page address (no RAM there)", (RECORDS + 8) * 8 + 45, NULL,
	  "folio array page missing" },
	{ "second array page address", (RECORDS + 16) * 8 + 13, NULL,
	  RECORDS_CRC },
	{ "size all ones", 0, "size=" ONES, "size out of range" },
	{ "size zero", 0, "size=0", "more folios than pages" },
	{ "position all ones", 0, "pos=" ONES, "position out of range" },
	{ "unknown seals", 0, "seals=0xffffffff", "unknown seals" },
	{ "records checksum", 0, "records_crc^=1", RECORDS_CRC },
	{ "one folio fewer", 0, "nr_folios=299", RECORDS_CRC },
	{ "folio count all ones", 0, "nr_folios=" ONES,
	  "more folios than pages" },
	{ "array's page count", 0, "folios_pages=3", BAD_SHAPE },
	{ "array's order", 0, "folios_order=1", BAD_SHAPE },
	{ "no array", 0, "folios_first=0", BAD_SHAPE },
	{ "a slash in the name", 0, "name=0x2f", "name with a slash or a NUL" },
	{ "a NUL in the name", 0, "name=0", "name with a slash or a NUL" },
	/*
	 * The array's page list at a page the next kernel frees at once (the
	 * table's), free or someone else's by the time it is read: it must
	 * be read without a fault or a KASAN report. What it holds decides
	 * which check refuses it.
	 */
	{ "page list at a freed page", 0, "folios_first=table", NULL },
};
#define NR_DAMAGES	ARRAY_SIZE(damages)
#define DAMAGED_LINE	"damaged hand-over data"

static int open_dev(struct __test_metadata *_metadata)
{
	int dev = open(LU_DEVICE, O_RDWR);

	ASSERT_LE(0, dev);
	return dev;
}

/* Defect: the table was empty and lu_kho_write_table() warned. */
TEST(kernel1_events_without_sessions)
{
	int dev = open_dev(_metadata);

	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_FREEZE, NULL));
	EXPECT_EQ(0, lu_kho_published_table());
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_CANCEL, NULL));
	close(dev);
}

/*
 * Defect: the session was created before its fd was reserved; the fd
 * failure closed it, and while PREPARED a closed session is kept and
 * carried over.
 */
TEST(kernel1_create_session_without_fd_leaves_nothing)
{
	struct lu_snapshot before, after;
	struct rlimit old, low;
	int dev = open_dev(_metadata);
	int session, fd;

	session = lu_create_session(dev, "held");
	ASSERT_LE(0, session);
	fd = lu_pattern_memfd(PAGE, 1);
	ASSERT_EQ(0, lu_preserve(session, fd, 1));
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	lu_snapshot(dev, &before);

	ASSERT_EQ(0, getrlimit(RLIMIT_NOFILE, &old));
	low = old;
	low.rlim_cur = fd;	/* every fd number is taken from here on */
	ASSERT_EQ(0, setrlimit(RLIMIT_NOFILE, &low));
	EXPECT_EQ(-EMFILE, lu_create_session(dev, "orphan"));
	ASSERT_EQ(0, setrlimit(RLIMIT_NOFILE, &old));
	lu_snapshot(dev, &after);
	EXPECT_SAME_SNAPSHOT(&before, &after);

	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_CANCEL, NULL));
	close(session);
	close(fd);
	close(dev);
}

/*
 * FREEZE with the Nth allocation failing, N = 1, 2, ... until it
 * succeeds: each failure returns an error and leaves the state, fds, pins
 * and bytes as they were, and the next FREEZE starts from there. Defect:
 * a FREEZE whose publication failed was never published again (and the
 * array it had freed could be reused while still preserved), so the page
 * written into a hole after PREPARE was lost. Kernel 2 checks it.
 */
TEST(kernel1_freeze_fail_nth)
{
	int dev = open_dev(_metadata);
	off_t hole = NTH_HOLE;
	int session, memfd, err;

	ASSERT_EQ(0, lu_fail_nth_setup()) TH_LOG("fail-nth needs the debug kernel");
	session = lu_create_session(dev, "nth");
	ASSERT_LE(0, session);
	memfd = memfd_create("nth", MFD_CLOEXEC);
	ASSERT_LE(0, memfd);
	ASSERT_EQ(0, ftruncate(memfd, NTH_SIZE));
	ASSERT_EQ(0, lu_pattern_write(memfd, SEED_NTH, 0, NTH_HOLE));
	ASSERT_EQ(0, lu_preserve(session, memfd, TOKEN_NTH));
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	/* A hole filled after PREPARE: FREEZE must carry it. */
	ASSERT_EQ(0, lu_pattern_write(memfd, SEED_NTH_HOLE, NTH_HOLE, PAGE));
	/*
	 * A FREEZE that coped is taken back; the next round fills the next
	 * hole (the size is frozen: no hole can be punched again).
	 */
	LU_FAIL_NTH_SWEEP(dev, err, lu_event(dev, LIVEUPDATE_EVENT_FREEZE, NULL),
			  { ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_CANCEL,
						  NULL));
			    ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_PREPARE,
						  NULL));
			    hole += PAGE;
			    ASSERT_GT(NTH_SIZE, hole);
			    ASSERT_EQ(0, lu_pattern_write(memfd, SEED_NTH_HOLE,
							  hole, PAGE)); });
	EXPECT_LT(0, lu_nth_failures);
	/* From PREPARE on, the module holds the session until the kexec. */
	close(memfd);
	close(session);
	close(dev);
}

static int retrieve_session(struct __test_metadata *_metadata, int dev,
			    const char *name)
{
	int session = lu_retrieve_session(dev, name);

	ASSERT_LE(0, session) TH_LOG("session %s: %d", name, session);
	return session;
}

/* The file under @token of session @name; the session stays open. */
static int retrieve_file(struct __test_metadata *_metadata, int dev,
			 const char *name, uint64_t token, int *session)
{
	int fd;

	*session = retrieve_session(_metadata, dev, name);
	fd = lu_retrieve(*session, token);
	ASSERT_LE(0, fd) TH_LOG("session %s, token %llu: %d", name,
				(unsigned long long)token, fd);
	return fd;
}

/*
 * Defect: a failed RETRIEVE_SESSION (here EMFILE) destroyed the incoming
 * session. Then the FREEZE that failed N times carried the late page.
 */
TEST(kernel2_failed_freeze_retried_carries_late_page)
{
	struct rlimit old, low;
	int dev = open_dev(_metadata);
	int session, fd;
	off_t hole;

	ASSERT_EQ(0, getrlimit(RLIMIT_NOFILE, &old));
	low = old;
	low.rlim_cur = dev;	/* every fd number is taken from here on */
	ASSERT_EQ(0, setrlimit(RLIMIT_NOFILE, &low));
	EXPECT_EQ(-EMFILE, lu_retrieve_session(dev, "nth"));
	ASSERT_EQ(0, setrlimit(RLIMIT_NOFILE, &old));
	fd = retrieve_file(_metadata, dev, "nth", TOKEN_NTH, &session);
	EXPECT_EQ(-1, lu_pattern_verify(fd, SEED_NTH, 0, NTH_HOLE));
	/*
	 * Holes filled round by round, the last one after the PREPARE that
	 * the failing FREEZEs followed; after it, holes only.
	 */
	for (hole = NTH_HOLE; hole < NTH_SIZE; hole += PAGE)
		if (lu_pattern_verify(fd, SEED_NTH_HOLE, hole, PAGE) >= 0)
			break;
	EXPECT_LT(NTH_HOLE, hole);
	if (hole < NTH_SIZE)
		EXPECT_EQ(-1, lseek(fd, hole, SEEK_DATA));
	close(fd);
	/* Closing the last retrieved session ends UPDATED. */
	close(session);
	close(dev);
}

/*
 * The "damaged" session: an intact memfd and one per entry of damages[],
 * each damaged at kexec; @bad_token's memfd too, at the default bit.
 */
static void damage_in_transit(struct __test_metadata *_metadata, int dev,
			      unsigned int bad_token)
{
	char flips[256], miswrites[512];
	size_t n, m = 0, i;
	int session, fd;

	session = lu_create_session(dev, "damaged");
	ASSERT_LE(0, session);
	n = snprintf(flips, sizeof(flips), "%u", bad_token);
	miswrites[0] = 0;
	for (i = 0; i <= NR_DAMAGES; i++) {
		fd = lu_pattern_memfd(DAMAGED_PAGES * PAGE, SEED_BAD + i);
		ASSERT_LE(0, fd);
		ASSERT_EQ(0, lu_preserve(session, fd, TOKEN_INTACT + i));
		close(fd);
		if (!i)
			continue;
		if (damages[i - 1].miswrite)
			m += snprintf(miswrites + m, sizeof(miswrites) - m,
				      "%s%u:%s", m ? "," : "",
				      (unsigned int)(TOKEN_INTACT + i),
				      damages[i - 1].miswrite);
		else
			n += snprintf(flips + n, sizeof(flips) - n, ",%u:%u",
				      (unsigned int)(TOKEN_INTACT + i),
				      damages[i - 1].bit);
		ASSERT_GT(sizeof(flips), n);
		ASSERT_GT(sizeof(miswrites), m);
	}
	ASSERT_EQ(0, lu_set_param_str("test_damage_memfd", flips));
	ASSERT_EQ(0, lu_set_param_str("test_miswrite_memfd", miswrites));
	close(session);
}

/* Pushes the page of @fd at @off out to swap. */
static void swap_out_page(struct __test_metadata *_metadata, int fd, off_t off)
{
	void *map;

	ASSERT_EQ(0, lu_swap_on());
	map = mmap(NULL, PAGE, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, off);
	ASSERT_NE(MAP_FAILED, map);
	ASSERT_EQ(0, madvise(map, PAGE, MADV_PAGEOUT));
	munmap(map, PAGE);
	ASSERT_LT(lu_meminfo_kb("SwapFree:"), lu_meminfo_kb("SwapTotal:"));
}

/*
 * Kernel 2 builds what kernel 3 checks, then PREPARE and FREEZE; changes
 * after FREEZE are carried by the reboot notifier, even a page written
 * into a hole and swapped out since (the file's pages in memory are then
 * exactly those carried already).
 */
TEST(kernel2_carry)
{
	uint64_t dep;
	int dev = open_dev(_metadata);
	int chain, big, late, bad, fd, i;

	/* A chain: token i needs token i - 1, retrieval walks 2000 deep. */
	chain = lu_create_session(dev, "chain");
	ASSERT_LE(0, chain);
	for (i = 1; i <= CHAIN; i++) {
		fd = lu_pattern_memfd(PAGE, SEED_CHAIN + i);
		ASSERT_LE(0, fd);
		dep = i - 1;
		ASSERT_EQ(0, lu_preserve_deps(chain, fd, i, &dep, i > 1));
		close(fd);
	}

	big = lu_create_session(dev, "big");
	ASSERT_LE(0, big);
	fd = memfd_create("big", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	ASSERT_EQ(0, lu_pattern_write(fd, SEED_BIG, 0, BIG_SIZE));
	ASSERT_EQ(0, lu_preserve(big, fd, TOKEN_BIG));
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	/*
	 * Seals added after PREPARE are carried. (F_SEAL_WRITE cannot be
	 * added any more: the pages are pinned, as in mainline after
	 * PRESERVE_FD.)
	 */
	ASSERT_EQ(0, fcntl(fd, F_ADD_SEALS, BIG_SEALS));
	close(fd);

	late = lu_create_session(dev, "late");
	ASSERT_LE(0, late);
	fd = memfd_create("late", MFD_CLOEXEC);
	ASSERT_EQ(0, ftruncate(fd, LATE_SIZE));
	ASSERT_EQ(0, lu_pattern_write(fd, SEED_LATE, 0, PAGE));
	ASSERT_EQ(0, lu_preserve(late, fd, TOKEN_LATE));

	bad = lu_create_session(dev, "bad");
	ASSERT_LE(0, bad);
	i = lu_pattern_memfd(4 * PAGE, SEED_BAD);
	ASSERT_EQ(0, lu_preserve(bad, i, TOKEN_BAD));
	close(i);
	damage_in_transit(_metadata, dev, TOKEN_BAD);

	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_FREEZE, NULL));
	/* After FREEZE: a hole written and the position moved. */
	ASSERT_EQ(0, lu_pattern_write(fd, SEED_LATE_HOLE, LATE_HOLE, PAGE));
	ASSERT_EQ(LATE_POS, lseek(fd, LATE_POS, SEEK_SET));
	swap_out_page(_metadata, fd, LATE_HOLE);
	/* The module holds the sessions until the kexec. */
	close(fd);
	close(chain);
	close(big);
	close(late);
	close(bad);
	close(dev);
}

/* Defect: retrieval recursed once per dependency. */
TEST(kernel3_chain_retrieved_at_once)
{
	int dev = open_dev(_metadata);
	int session = retrieve_session(_metadata, dev, "chain");
	int fd, i;

	fd = lu_retrieve(session, CHAIN);
	ASSERT_LE(0, fd);
	EXPECT_EQ(-1, lu_pattern_verify(fd, SEED_CHAIN + CHAIN, 0, PAGE));
	close(fd);
	for (i = 1; i <= CHAIN; i += 199) {
		fd = lu_retrieve(session, i);
		ASSERT_LE(0, fd);
		EXPECT_EQ(-1, lu_pattern_verify(fd, SEED_CHAIN + i, 0, PAGE));
		close(fd);
	}
	close(session);
	close(dev);
}

/* Defect: the restore copy obeyed RLIMIT_FSIZE (SIGXFSZ killed us). */
TEST(kernel3_retrieve_ignores_rlimit_fsize)
{
	struct rlimit tiny = { .rlim_cur = PAGE, .rlim_max = RLIM_INFINITY };
	int dev = open_dev(_metadata);
	int session, fd;

	ASSERT_EQ(0, setrlimit(RLIMIT_FSIZE, &tiny));
	fd = retrieve_file(_metadata, dev, "big", TOKEN_BIG, &session);
	EXPECT_EQ((off_t)BIG_SIZE, lseek(fd, 0, SEEK_END));
	EXPECT_EQ(-1, lu_pattern_verify(fd, SEED_BIG, 0, BIG_SIZE));
	/* Defect: seals added after PREPARE were lost. */
	EXPECT_EQ(BIG_SEALS, fcntl(fd, F_GET_SEALS));
	EXPECT_EQ(-1, pwrite(fd, "x", 1, 0));
	EXPECT_EQ(EPERM, errno);
	close(fd);
	close(session);
	close(dev);
}

/* Defect: the notifier skipped files frozen already. */
TEST(kernel3_changes_after_freeze_carried)
{
	int dev = open_dev(_metadata);
	int session;
	int fd = retrieve_file(_metadata, dev, "late", TOKEN_LATE, &session);

	EXPECT_EQ(LATE_POS, lseek(fd, 0, SEEK_CUR));
	EXPECT_EQ(-1, lu_pattern_verify(fd, SEED_LATE, 0, PAGE));
	EXPECT_EQ(-1, lu_pattern_verify(fd, SEED_LATE_HOLE, LATE_HOLE, PAGE));
	close(fd);
	close(session);
	close(dev);
}

/*
 * Defect: a retry after a failed retrieval returned an all-zero file of
 * full size. A damaged memfd fails the same way every time.
 */
TEST(kernel3_damaged_memfd_fails_every_time)
{
	int dev = open_dev(_metadata);
	int session = retrieve_session(_metadata, dev, "bad");

	EXPECT_EQ(-EIO, lu_retrieve(session, TOKEN_BAD));
	EXPECT_EQ(-EIO, lu_retrieve(session, TOKEN_BAD));
	EXPECT_EQ(0, lu_finish(session));
	close(session);
	close(dev);
}

/*
 * Each field damaged in transit or written wrong is caught before any
 * address in it is used: that memfd alone fails, with one log line however often it is
 * retried, and the rest of its session comes back whole.
 */
TEST(kernel3_damaged_in_transit_fail_alone)
{
	int dev = open_dev(_metadata);
	int session = retrieve_session(_metadata, dev, "damaged");
	int before = lu_dmesg_count(DAMAGED_LINE);
	char line[128];
	unsigned int i;
	int fd;

	ASSERT_LE(0, before);
	for (i = 0; i < NR_DAMAGES; i++) {
		if (i % 8 == 0)
			sleep(6);	/* lu_err() allows 10 lines in 5 s */
		EXPECT_EQ(-EIO, lu_retrieve(session, TOKEN_DAMAGED + i))
			TH_LOG("damaged %s", damages[i].what);
		snprintf(line, sizeof(line), "memfd %u: " DAMAGED_LINE ": %s",
			 TOKEN_DAMAGED + i, damages[i].why ?: "");
		EXPECT_EQ(1, lu_dmesg_count(line))
			TH_LOG("damaged %s: want \"%s\"", damages[i].what, line);
	}
	/* A retry fails the same way and says nothing more. */
	for (i = 0; i < NR_DAMAGES; i++)
		EXPECT_EQ(-EIO, lu_retrieve(session, TOKEN_DAMAGED + i));
	EXPECT_EQ(before + (int)NR_DAMAGES, lu_dmesg_count(DAMAGED_LINE));
	fd = lu_retrieve(session, TOKEN_INTACT);
	ASSERT_LE(0, fd);
	EXPECT_EQ(-1, lu_pattern_verify(fd, SEED_BAD, 0, DAMAGED_PAGES * PAGE));
	close(fd);
	EXPECT_EQ(0, lu_finish(session));
	close(session);
	close(dev);
}

/* Everything is finished; the kexec after this hands over nothing. */
TEST(kernel3_all_finished)
{
	struct liveupdate_get_state st;
	int dev = open_dev(_metadata);

	ASSERT_EQ(0, lu_get_state(dev, &st));
	EXPECT_EQ((__u32)LIVEUPDATE_STATE_NORMAL, st.state);
	EXPECT_EQ(0U, st.nr_incoming_sessions);
	EXPECT_EQ(0U, st.nr_sessions);
	close(dev);
}

TEST(kernel4_nothing_came)
{
	struct liveupdate_get_state st;
	int dev = open_dev(_metadata);

	ASSERT_EQ(0, lu_get_state(dev, &st));
	EXPECT_EQ((__u32)LIVEUPDATE_STATE_NORMAL, st.state);
	EXPECT_EQ(0U, st.nr_incoming_sessions);
	EXPECT_EQ(-ENOENT, lu_retrieve_session(dev, "chain"));
	close(dev);
}

int main(int argc, char **argv)
{
	return lu_staged_main(argc, argv);
}
