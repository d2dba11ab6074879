// SPDX-License-Identifier: GPL-2.0
/*
 * Dependencies and the participant API, with the sample module
 * (kernel/samples/lu_sample.ko): slots are windows onto memfds, carried
 * across a real kexec with their memfd as a dependency; the sample's
 * subsystem carries its slot counter.
 *  1. dependency errors (bad lists, a missing token, a cycle, a slot whose
 *     memfd is not a dependency), then slots and memfds preserved in the
 *     wrong order, PREPARE, FREEZE, kexec.
 *  2. a slot waits for its handler (ENOPKG until lu_sample.ko loads), then
 *     comes back over the retrieved memfd; the counter came over; FINISH
 *     frees the unclaimed slot and memfd.
 * Each test runs in the stage its name says (LU_STAGE).
 */
#include <sys/syscall.h>

#include "kselftest_harness.h"
#include "lu_util.h"
#include "lu_stage.h"
#include "../kernel/samples/lu_sample.h"

#define MIB		(1024ULL * 1024)
#define PAGE		4096ULL
#define SAMPLE_DEV	"/dev/lu_sample"
/* Beside the liveupdate.ko that the runner loads (LU_MODULE). */
#define SAMPLE_INSMOD	"insmod \"$(dirname \"$LU_MODULE\")/samples/lu_sample.ko\""
#define SEED		41


static int create_slot(int memfd, uint64_t offset, uint64_t length,
		       const char *label)
{
	struct lu_sample_create_slot req = {
		.size = sizeof(req), .memfd = memfd, .offset = offset,
		.length = length,
	};
	int dev = open(SAMPLE_DEV, O_RDWR), err;

	if (dev < 0)
		return -errno;
	snprintf(req.label, sizeof(req.label), "%s", label);
	err = lu_ioctl(dev, LU_SAMPLE_CREATE_SLOT, &req);
	close(dev);
	return err ? err : req.fd;
}

static struct lu_sample_info sample_info(void)
{
	struct lu_sample_info info = { .size = sizeof(info) };
	int dev = open(SAMPLE_DEV, O_RDWR);

	if (dev >= 0) {
		lu_ioctl(dev, LU_SAMPLE_INFO, &info);
		close(dev);
	}
	return info;
}

/* The counter stage 1 leaves, in LU_OUT (the host's disk). */
static const char *generation_file(void)
{
	static char path[256];

	snprintf(path, sizeof(path), "%s/sample_generation",
		 getenv("LU_OUT") ? getenv("LU_OUT") : "/tmp");
	return path;
}

TEST(kernel1_dependency_errors)
{
	static const uint64_t self_dep[] = { 1 }, twice[] = { 2, 2 }, missing[] = { 9 };
	uint64_t many[LIVEUPDATE_MAX_DEPS + 1];
	struct liveupdate_session_preserve_fd_deps arg;
	struct liveupdate_set_event ev;
	long long pins = lu_pins_held();
	int dev, session, a, b, slot;
	uint64_t one = 1, two = 2;

	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	a = lu_pattern_memfd(PAGE, 1);
	b = lu_pattern_memfd(PAGE, 2);
	ASSERT_LE(0, a);
	ASSERT_LE(0, b);

	/* Bad lists are refused at preserve time and change nothing. */
	session = lu_create_session(dev, "deps");
	ASSERT_LE(0, session);
	for (int i = 0; i <= LIVEUPDATE_MAX_DEPS; i++)
		many[i] = 100 + i;
	EXPECT_EQ(-EINVAL, lu_preserve_deps(session, a, 1, self_dep, 1));
	EXPECT_EQ(-EINVAL, lu_preserve_deps(session, a, 1, twice, 2));
	EXPECT_EQ(-EINVAL, lu_preserve_deps(session, a, 1, many, LIVEUPDATE_MAX_DEPS + 1));
	EXPECT_EQ(-EFAULT, lu_preserve_deps(session, a, 1, (uint64_t *)8, 1));
	arg = (struct liveupdate_session_preserve_fd_deps){
		.size = sizeof(arg), .fd = a, .token = 1, .reserved = 1,
	};
	EXPECT_EQ(-EINVAL, lu_ioctl(session, LIVEUPDATE_SESSION_PRESERVE_FD_DEPS, &arg));
	/* LIVEUPDATE_MAX_DEPS tokens is fine; they need not exist yet. */
	EXPECT_EQ(0, lu_preserve_deps(session, a, 1, many, LIVEUPDATE_MAX_DEPS));
	close(session);

	/* A missing dependency fails PREPARE and names the token. */
	session = lu_create_session(dev, "deps");
	ASSERT_LE(0, session);
	ASSERT_EQ(0, lu_preserve_deps(session, a, 1, NULL, 0));
	ASSERT_EQ(0, lu_preserve_deps(session, b, 2, missing, 1));
	EXPECT_EQ(-ENOENT, lu_event(dev, LIVEUPDATE_EVENT_PREPARE, &ev));
	EXPECT_EQ(9U, ev.err_token);
	EXPECT_STREQ("deps", (char *)ev.err_session);
	EXPECT_STREQ("normal", lu_sysfs_state());
	close(session);

	/* A cycle fails with ELOOP. */
	session = lu_create_session(dev, "cycle");
	ASSERT_LE(0, session);
	ASSERT_EQ(0, lu_preserve_deps(session, a, 1, &two, 1));
	ASSERT_EQ(0, lu_preserve_deps(session, b, 2, &one, 1));
	EXPECT_EQ(-ELOOP, lu_event(dev, LIVEUPDATE_EVENT_PREPARE, &ev));
	EXPECT_TRUE(ev.err_token == 1 || ev.err_token == 2);
	close(session);

	/* The sample refuses a slot whose memfd is not its dependency. */
	session = lu_create_session(dev, "no-dep");
	ASSERT_LE(0, session);
	slot = create_slot(a, 0, PAGE, "lonely");
	ASSERT_LE(0, slot);
	ASSERT_EQ(0, lu_preserve(session, a, 1));
	ASSERT_EQ(0, lu_preserve_deps(session, b, 2, NULL, 0));
	ASSERT_EQ(0, lu_preserve_deps(session, slot, 3, &two, 1));
	EXPECT_EQ(-EINVAL, lu_event(dev, LIVEUPDATE_EVENT_PREPARE, &ev));
	EXPECT_EQ(3U, ev.err_token);
	EXPECT_STREQ("normal", lu_sysfs_state());
	close(session);
	close(slot);

	/* Every failed PREPARE undid its work: no pin is left. */
	EXPECT_EQ(pins, lu_pins_held());
	close(a);
	close(b);
	close(dev);
}

TEST(kernel1_slots_across_kexec)
{
	static const uint64_t on_memfd[] = { 1 };
	struct lu_sample_info info;
	int dev, session, unclaimed, memfd, other, s1, s2, s3, late;
	FILE *f;

	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	memfd = lu_pattern_memfd(MIB, SEED);
	ASSERT_LE(0, memfd);
	s1 = create_slot(memfd, PAGE, 2 * PAGE, "first");
	s2 = create_slot(memfd, 0, MIB, "whole");
	ASSERT_LE(0, s1);
	ASSERT_LE(0, s2);

	/* The slots come before their memfd: PREPARE reorders. */
	session = lu_create_session(dev, "sample");
	ASSERT_LE(0, session);
	ASSERT_EQ(0, lu_preserve_deps(session, s1, 2, on_memfd, 1));
	ASSERT_EQ(0, lu_preserve_deps(session, s2, 3, on_memfd, 1));
	ASSERT_EQ(0, lu_preserve(session, memfd, 1));

	unclaimed = lu_create_session(dev, "sample-unclaimed");
	ASSERT_LE(0, unclaimed);
	other = lu_pattern_memfd(MIB, SEED + 1);
	ASSERT_LE(0, other);
	s3 = create_slot(other, 0, MIB, "unclaimed");
	ASSERT_LE(0, s3);
	ASSERT_EQ(0, lu_preserve_deps(unclaimed, s3, 2, on_memfd, 1));
	ASSERT_EQ(0, lu_preserve(unclaimed, other, 1));

	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_PREPARE, NULL));
	/* A slot made after PREPARE counts: FREEZE records the counter. */
	late = create_slot(memfd, 0, PAGE, "late");
	ASSERT_LE(0, late);
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_FREEZE, NULL));
	/* "lonely" in the test before, s1, s2, s3, late. */
	info = sample_info();
	EXPECT_EQ(5U, info.generation);
	f = fopen(generation_file(), "w");
	ASSERT_NE(NULL, f);
	fprintf(f, "%llu\n", (unsigned long long)info.generation);
	fclose(f);
	ASSERT_EQ(0, lu_hold_fds_until_kexec());
}

/* Reads the whole window of @slot, which starts at @offset of the memfd. */
static void read_slot(struct __test_metadata *_metadata, int slot, uint64_t offset,
		      uint64_t length)
{
	static uint8_t buf[MIB];

	ASSERT_EQ((ssize_t)length, pread(slot, buf, length, 0));
	EXPECT_EQ(-1, lu_pattern_check(buf, length, SEED, offset));
	/* The window ends there. */
	EXPECT_EQ(0, pread(slot, buf, 1, length));
}

TEST(kernel2_slot_waits_for_its_handler)
{
	struct liveupdate_set_event ev;
	struct lu_sample_slot_info si = { .size = sizeof(si) };
	unsigned long long generation = 0;
	int dev, session, s1, s2, memfd, fresh;
	char buf[8];
	FILE *f;

	f = fopen(generation_file(), "r");
	ASSERT_NE(NULL, f);
	ASSERT_EQ(1, fscanf(f, "%llu", &generation));
	fclose(f);
	dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, dev);
	session = lu_retrieve_session(dev, "sample");
	ASSERT_LE(0, session);
	EXPECT_EQ(-ENOPKG, lu_retrieve(session, 2));

	ASSERT_EQ(0, system(SAMPLE_INSMOD));
	EXPECT_EQ(generation, sample_info().handed_over);

	/* The slot brings its memfd along: retrieved first, behind the scenes. */
	s1 = lu_retrieve(session, 2);
	ASSERT_LE(0, s1);
	ASSERT_EQ(0, lu_ioctl(s1, LU_SAMPLE_SLOT_INFO, &si));
	EXPECT_STREQ("first", si.label);
	EXPECT_EQ(PAGE, si.offset);
	EXPECT_EQ(2U, si.generation);
	read_slot(_metadata, s1, PAGE, 2 * PAGE);
	s2 = lu_retrieve(session, 3);
	ASSERT_LE(0, s2);
	read_slot(_metadata, s2, 0, MIB);

	/* Both slots read the memfd that RETRIEVE_FD returns. */
	memfd = lu_retrieve(session, 1);
	ASSERT_LE(0, memfd);
	ASSERT_EQ(5, pwrite(memfd, "hello", 5, PAGE));
	ASSERT_EQ(5, pread(s1, buf, 5, 0));
	EXPECT_EQ(0, memcmp(buf, "hello", 5));
	ASSERT_EQ(5, pread(s2, buf, 5, PAGE));
	EXPECT_EQ(0, memcmp(buf, "hello", 5));

	/* New slots continue the count of the previous kernel. */
	fresh = create_slot(memfd, 0, PAGE, "fresh");
	ASSERT_LE(0, fresh);
	ASSERT_EQ(0, lu_ioctl(fresh, LU_SAMPLE_SLOT_INFO, &si));
	EXPECT_EQ(generation + 1, si.generation);

	/* FINISH frees the unclaimed slot and memfd, slot first. */
	ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_FINISH, &ev));
	EXPECT_EQ(1U, ev.nr_sessions);
	EXPECT_EQ(2U, ev.nr_files);
	/* The memfd's MiB; the slot's data was in liveupdate's table. */
	EXPECT_EQ(MIB, ev.nr_bytes);
	EXPECT_STREQ("normal", lu_sysfs_state());
	/* Retrieved slots keep working after FINISH. */
	ASSERT_EQ(5, pread(s2, buf, 5, PAGE));
	EXPECT_EQ(0, memcmp(buf, "hello", 5));
	close(fresh);
	close(s1);
	close(s2);
	close(memfd);
	close(session);
	close(dev);
}

int main(int argc, char **argv)
{
	return lu_staged_main(argc, argv);
}
