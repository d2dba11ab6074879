// SPDX-License-Identifier: GPL-2.0
/*
 * A damaged root or table is refused as a whole, with one log line, and
 * the module still works (seven kernels). Kernels 1 to 6 each preserve a
 * memfd and damage what the next kernel reads, as in transit (debug
 * module hook test_damage_handover, applied after the checksums were
 * written); kernels 2 to 7 check that the damage was noticed and said in
 * exactly one line, that nothing was taken over, and that a new session
 * can be created. Damaged in turn: the format version, the magic, a
 * count in the table's header, the memfd header in the table's data
 * area, a page address in the table's page list, and the table's size in
 * the root.
 */
#include "kselftest_harness.h"
#include "lu_util.h"
#include "lu_stage.h"

#define SESSION	"damaged"

/* What kernel N damages, and what kernel N + 1 must say about it. */
static const struct {
	const char *damage;
	const char *line;
} kernels[] = {
	{ "version", "hand-over format version %u unsupported" },
	{ "magic", "hand-over root has bad magic" },
	/* struct lu_ser_table: nr_files, bit 0 */
	{ "table:32", "hand-over table rejected: checksum mismatch" },
	/* the memfd's header, first in the data area: its size, bit 13 */
	{ "data:13", "hand-over table rejected: checksum mismatch" },
	/* the page list's first page address: a neighbouring page */
	{ "list:76", "hand-over table rejected: page list checksum mismatch" },
	/* struct lu_ser_root: table_bytes, bit 33 */
	{ "root:289", "hand-over table rejected: size out of range" },
};

static void damage_and_hold(struct __test_metadata *_metadata, int kernel)
{
	int dev = open(LU_DEVICE, O_RDWR);
	int session, fd;

	ASSERT_LE(0, dev);
	session = lu_create_session(dev, SESSION);
	ASSERT_LE(0, session);
	fd = lu_pattern_memfd(8192, kernel);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, lu_preserve(session, fd, 1));
	ASSERT_EQ(0, lu_set_param_str("test_damage_handover",
				      kernels[kernel - 1].damage));
	/* The module holds the session from PREPARE until the kexec. */
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_FREEZE, NULL));
	close(fd);
	close(session);
	close(dev);
}

static void check_refused(struct __test_metadata *_metadata, int previous)
{
	struct liveupdate_get_state st;
	char line[128];
	int dev, session;

	ASSERT_EQ(1, lu_dmesg_count("liveupdate: ") -
		     lu_dmesg_count("taints kernel"));
	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	ASSERT_EQ(0, lu_get_state(dev, &st));
	snprintf(line, sizeof(line), kernels[previous - 1].line,
		 st.format_version + 1);
	EXPECT_EQ(1, lu_dmesg_count(line)) TH_LOG("want \"%s\"", line);
	EXPECT_EQ(0U, st.nr_incoming_sessions);
	EXPECT_EQ(-ENOENT, lu_retrieve_session(dev, SESSION));
	session = lu_create_session(dev, "still-works");
	EXPECT_LE(0, session);
	close(session);
	close(dev);
}

TEST(kernel1_damage_version)
{
	damage_and_hold(_metadata, 1);
}

TEST(kernel2_refused_version_then_damage_magic)
{
	check_refused(_metadata, 1);
	damage_and_hold(_metadata, 2);
}

TEST(kernel3_refused_magic_then_damage_table)
{
	check_refused(_metadata, 2);
	damage_and_hold(_metadata, 3);
}

TEST(kernel4_refused_table_then_damage_data)
{
	check_refused(_metadata, 3);
	damage_and_hold(_metadata, 4);
}

TEST(kernel5_refused_data_then_damage_page_list)
{
	check_refused(_metadata, 4);
	damage_and_hold(_metadata, 5);
}

TEST(kernel6_refused_page_list_then_damage_root)
{
	check_refused(_metadata, 5);
	damage_and_hold(_metadata, 6);
}

TEST(kernel7_refused_root)
{
	check_refused(_metadata, 6);
}

int main(int argc, char **argv)
{
	return lu_staged_main(argc, argv);
}
