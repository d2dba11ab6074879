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
 *
 * Kernel 1 first reads its own table, written wrong one field at a time
 * (checksums right), with the next kernel's checks and builder (debugfs
 * hook of the debug module): every field of the header and of each kind
 * of entry, zeroed, all ones, a bit flipped, copied from the entry
 * before, or set to a chosen value. A refusal is -EBADMSG and one log
 * line naming the reason; damage that leaves a valid table (a token or a
 * name changed) is taken. The plan loads the sample module first, so that
 * the table has a subsystem entry too.
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

#define MISWRITE	"/sys/kernel/debug/liveupdate/read_miswritten_table"
#define BAD_COUNTS	"table size does not match its counts"
#define BAD_FILES	"bad file range"
#define BAD_DEPS	"bad dependency range"
#define BAD_DATA	"bad file data range"
#define BUILD		"duplicate session name or token, or dependency out of order"

/* Session "mw-a": tokens 1, 2 (needs 1), 3 (needs 1, 2); "mw-b": token 1. */
static const struct {
	const char *spec;	/* ARRAY.FIELD@INDEX:KIND */
	const char *why;	/* the refusal, or NULL: taken */
} miswrites[] = {
	{ "table.nr_sessions@0:flip", BAD_COUNTS },
	{ "table.nr_files@0:zero", BAD_COUNTS },
	{ "table.nr_deps@0:ones", BAD_COUNTS },
	{ "table.nr_subsystems@0:flip", BAD_COUNTS },
	{ "table.data_bytes@0:flip", BAD_COUNTS },
	{ "table.reserved@0:flip", "reserved field set" },
	{ "session.name@0:zero", "bad session name" },
	{ "session.name@0:ones", "bad session name" },
	{ "session.name@1:prev", BUILD },
	{ "session.name@0:flip", NULL },
	{ "session.first_file@0:ones", BAD_FILES },
	{ "session.first_file@1:flip", BAD_FILES },
	{ "session.nr_files@0:zero", BAD_FILES },
	{ "session.nr_files@1:ones", BAD_FILES },
	{ "file.token@1:prev", BUILD },
	{ "file.token@0:flip", BUILD },	/* token 2 needs 1 */
	{ "file.token@3:flip", NULL },
	{ "file.compatible@0:zero", "bad file handler name" },
	{ "file.compatible@0:ones", "bad file handler name" },
	{ "file.compatible@0:flip", NULL },	/* a handler unknown here */
	{ "file.first_dep@1:ones", BAD_DEPS },
	{ "file.nr_deps@1:ones", BAD_DEPS },
	{ "file.nr_deps@2:zero", NULL },
	{ "file.data_offset@0:flip", BAD_DATA },
	{ "file.data_offset@0:ones", BAD_DATA },
	{ "file.data_size@0:ones", BAD_DATA },
	{ "dep.token@0:zero", BUILD },		/* no token 0 */
	{ "dep.token@0:ones", BUILD },
	{ "dep.token@0:=3", BUILD },		/* a later file */
	{ "dep.token@1:=3", BUILD },		/* the file itself */
	{ "dep.token@2:=1", BUILD },		/* the same token twice */
	{ "subsystem.name@0:zero", "bad subsystem name" },
	{ "subsystem.name@0:ones", "bad subsystem name" },
	{ "subsystem.data_offset@0:flip", "bad subsystem data range" },
	{ "subsystem.data_size@0:ones", "bad subsystem data range" },
	{ "subsystem.name@0:flip", NULL },	/* a subsystem unknown here */
};

static const struct {
	const char *array;
	const char *fields[7];
	int entries;
} entries[] = {
	{ "table", { "nr_sessions", "nr_files", "nr_deps", "nr_subsystems",
		     "data_bytes", "reserved" }, 1 },
	{ "session", { "name", "first_file", "nr_files" }, 2 },
	{ "file", { "token", "compatible", "first_dep", "nr_deps",
		    "data_offset", "data_size" }, 4 },
	{ "dep", { "token" }, 3 },
	{ "subsystem", { "name", "data_offset", "data_size" }, 1 },
};

/* Writes @spec to the hook: 0 if taken, else -errno (-EBADMSG: refused). */
static int read_miswritten(const char *spec)
{
	int fd = open(MISWRITE, O_WRONLY);
	int err = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, spec, strlen(spec)) < 0)
		err = -errno;
	close(fd);
	return err;
}

TEST(kernel1_miswritten_table_fields)
{
	static const char *const kinds[] = { "zero", "ones", "flip", "prev" };
	int dev, a, b, fds[4], err, i, j, k, n;
	uint64_t deps[2] = { 1, 2 };
	char spec[64], line[192];

	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	a = lu_create_session(dev, "mw-a");
	b = lu_create_session(dev, "mw-b");
	ASSERT_LE(0, a);
	ASSERT_LE(0, b);
	for (i = 0; i < 4; i++) {
		fds[i] = lu_pattern_memfd(4096, i);
		ASSERT_LE(0, fds[i]);
	}
	ASSERT_EQ(0, lu_preserve(a, fds[0], 1));
	ASSERT_EQ(0, lu_preserve_deps(a, fds[1], 2, deps, 1));
	ASSERT_EQ(0, lu_preserve_deps(a, fds[2], 3, deps, 2));
	ASSERT_EQ(0, lu_preserve(b, fds[3], 1));
	EXPECT_EQ(-EBUSY, read_miswritten("table.nr_files@0:flip"));
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_FREEZE, NULL));
	EXPECT_EQ(-EINVAL, read_miswritten("file.token@4:flip"));
	EXPECT_EQ(-EINVAL, read_miswritten("file.token@0:prev"));

	for (i = 0; i < (int)ARRAY_SIZE(miswrites); i++) {
		err = read_miswritten(miswrites[i].spec);
		EXPECT_EQ(miswrites[i].why ? -EBADMSG : 0, err)
			TH_LOG("%s", miswrites[i].spec);
		if (!miswrites[i].why)
			continue;
		snprintf(line, sizeof(line),
			 "liveupdate: test: %s: table rejected: %s",
			 miswrites[i].spec, miswrites[i].why);
		EXPECT_EQ(1, lu_dmesg_count(line)) TH_LOG("want \"%s\"", line);
	}

	/* Every field of every entry, every kind: taken or refused, no more. */
	n = 0;
	for (i = 0; i < (int)ARRAY_SIZE(entries); i++)
		for (j = 0; j < 7 && entries[i].fields[j]; j++)
			for (k = 0; k < entries[i].entries * 4; k++) {
				if (k / 4 == 0 && k % 4 == 3)
					continue;	/* no entry before */
				snprintf(spec, sizeof(spec), "%s.%s@%d:%s",
					 entries[i].array, entries[i].fields[j],
					 k / 4, kinds[k % 4]);
				err = read_miswritten(spec);
				EXPECT_TRUE(err == 0 || err == -EBADMSG)
					TH_LOG("%s: %d", spec, err);
				n++;
			}
	TH_LOG("%d miswritten tables read", n);

	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_CANCEL, NULL));
	for (i = 0; i < 4; i++)
		close(fds[i]);
	close(a);
	close(b);
	close(dev);
}

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
