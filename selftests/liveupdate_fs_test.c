// SPDX-License-Identifier: GPL-2.0
/*
 * liveupdatefs in one kernel, through the new mount API (fsopen, fsconfig,
 * fsmount, move_mount) beside mount(2): one instance per session name,
 * every bad option refused with its errno, size= bounding what an instance
 * holds, and removal through the control instance. (The kexec itself is
 * selftests/pytest/test_fs_kexec.py's.)
 */
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "lu_stage.h"
#include "lu_util.h"

#define FSTYPE		"liveupdatefs"
#define SESSION		"fs-api"
#define MNT		"/tmp/lufs-api"
#define MNT2		"/tmp/lufs-api2"
#define CONTROL		"/tmp/lufs-api-control"

/* An fs context for liveupdatefs with these string options, or -1. */
static int configured(const char *const *opts)
{
	int fsfd = fsopen(FSTYPE, FSOPEN_CLOEXEC);

	for (; fsfd >= 0 && *opts; opts += 2) {
		if (fsconfig(fsfd, FSCONFIG_SET_STRING, opts[0], opts[1], 0)) {
			close(fsfd);
			return -1;
		}
	}
	return fsfd;
}

/* Creates the superblock and attaches it at @where: 0 or -1 (errno). */
static int create_at(int fsfd, const char *where)
{
	int mfd;

	if (fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0))
		return -1;
	mfd = fsmount(fsfd, FSMOUNT_CLOEXEC, 0);
	if (mfd < 0)
		return -1;
	mkdir(where, 0700);
	if (move_mount(mfd, "", AT_FDCWD, where, MOVE_MOUNT_F_EMPTY_PATH)) {
		close(mfd);
		return -1;
	}
	close(mfd);
	return 0;
}

static int remove_instance(const char *session)
{
	char path[PATH_MAX];

	mkdir(CONTROL, 0700);
	if (mount("none", CONTROL, FSTYPE, 0, NULL))
		return -1;
	snprintf(path, sizeof(path), CONTROL "/sessions/outgoing/%s", session);
	if (unlink(path)) {
		umount(CONTROL);
		return -1;
	}
	return umount(CONTROL);
}

TEST(new_mount_api_shares_the_instance)
{
	const char *opts[] = { "session", SESSION, "size", "4m", NULL };
	struct stat st;
	int fsfd, fd;

	fsfd = configured(opts);
	ASSERT_LE(0, fsfd);
	ASSERT_EQ(0, create_at(fsfd, MNT));
	close(fsfd);
	fd = open(MNT "/x", O_CREAT | O_WRONLY, 0600);
	ASSERT_LE(0, fd);
	ASSERT_EQ(5, write(fd, "hello", 5));
	close(fd);
	/* mount(2) of the same name: the same files. */
	mkdir(MNT2, 0700);
	ASSERT_EQ(0, mount("none", MNT2, FSTYPE, 0, "session=" SESSION));
	ASSERT_EQ(0, stat(MNT2 "/x", &st));
	ASSERT_EQ(5, st.st_size);
	/* Options belong to the instance's making. */
	EXPECT_EQ(-1, mount("none", MNT2, FSTYPE, 0, "session=" SESSION ",size=8m"));
	EXPECT_EQ(EBUSY, errno);
	ASSERT_EQ(0, umount(MNT2));
	ASSERT_EQ(0, umount(MNT));
	/* Unmounted, still there; removed, gone. */
	ASSERT_EQ(0, mount("none", MNT, FSTYPE, 0, "session=" SESSION));
	ASSERT_EQ(0, stat(MNT "/x", &st));
	ASSERT_EQ(0, umount(MNT));
	ASSERT_EQ(0, remove_instance(SESSION));
	ASSERT_EQ(0, mount("none", MNT, FSTYPE, 0, "session=" SESSION));
	EXPECT_EQ(-1, stat(MNT "/x", &st));
	ASSERT_EQ(0, umount(MNT));
	ASSERT_EQ(0, remove_instance(SESSION));
}

TEST(bad_options_are_refused)
{
	char long_name[80];
	int fsfd;

	fsfd = fsopen(FSTYPE, FSOPEN_CLOEXEC);
	ASSERT_LE(0, fsfd);
	EXPECT_EQ(-1, fsconfig(fsfd, FSCONFIG_SET_STRING, "session", "", 0));
	EXPECT_EQ(EINVAL, errno);
	memset(long_name, 'n', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = 0;
	EXPECT_EQ(-1, fsconfig(fsfd, FSCONFIG_SET_STRING, "session", long_name, 0));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, fsconfig(fsfd, FSCONFIG_SET_FLAG, "session", NULL, 0));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, fsconfig(fsfd, FSCONFIG_SET_STRING, "nosuchoption", "1", 0));
	EXPECT_EQ(EINVAL, errno);
	/* The control instance takes no options. */
	ASSERT_EQ(0, fsconfig(fsfd, FSCONFIG_SET_STRING, "size", "1m", 0));
	EXPECT_EQ(-1, fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0));
	EXPECT_EQ(EINVAL, errno);
	close(fsfd);
	/* Nothing was made. */
	mkdir(CONTROL, 0700);
	ASSERT_EQ(0, mount("none", CONTROL, FSTYPE, 0, NULL));
	EXPECT_EQ(-1, access(CONTROL "/sessions/outgoing/" SESSION, F_OK));
	ASSERT_EQ(0, umount(CONTROL));
}

TEST(size_bounds_what_an_instance_holds)
{
	const char *opts[] = { "session", SESSION, "size", "1m", NULL };
	static char chunk[256 << 10];
	ssize_t written = 0, n;
	int fsfd, fd;

	fsfd = configured(opts);
	ASSERT_LE(0, fsfd);
	ASSERT_EQ(0, create_at(fsfd, MNT));
	close(fsfd);
	fd = open(MNT "/big", O_CREAT | O_WRONLY, 0600);
	ASSERT_LE(0, fd);
	while ((n = write(fd, chunk, sizeof(chunk))) > 0)
		written += n;
	EXPECT_EQ(ENOSPC, errno);
	EXPECT_EQ(1 << 20, written);
	close(fd);
	ASSERT_EQ(0, umount(MNT));
	ASSERT_EQ(0, remove_instance(SESSION));
}

#define RACE_INSTANCES	100

/*
 * PREPARE collects every instance, also one a mount is making meanwhile:
 * that one must be collected whole or not at all. (An instance's session
 * was once published before its superblock: PREPARE in between
 * dereferenced a NULL mount.) A child drives PREPARE and CANCEL while
 * instances are made.
 */
TEST(prepare_races_instances_being_made)
{
	const char *opts[] = { "session", NULL, NULL };
	char names[RACE_INSTANCES][32];
	struct liveupdate_get_state st;
	int i, dev, fsfd, status;
	pid_t child;

	child = fork();
	ASSERT_LE(0, child);
	if (!child) {
		dev = open(LU_DEVICE, O_RDWR | O_CLOEXEC);
		if (dev < 0)
			_exit(1);
		for (;;) {
			lu_event(dev, LIVEUPDATE_EVENT_PREPARE, NULL);
			lu_event(dev, LIVEUPDATE_EVENT_CANCEL, NULL);
		}
	}
	for (i = 0; i < RACE_INSTANCES; i++) {
		snprintf(names[i], sizeof(names[i]), "fs-race-%d", i);
		opts[1] = names[i];
		fsfd = configured(opts);
		ASSERT_LE(0, fsfd);
		EXPECT_EQ(0, fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0));
		close(fsfd);
	}
	ASSERT_EQ(0, kill(child, SIGKILL));
	ASSERT_EQ(child, waitpid(child, &status, 0));
	ASSERT_TRUE(WIFSIGNALED(status));
	dev = open(LU_DEVICE, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, dev);
	ASSERT_EQ(0, lu_get_state(dev, &st));
	if (st.state == LIVEUPDATE_STATE_PREPARED)
		ASSERT_EQ(0, lu_event(dev, LIVEUPDATE_EVENT_CANCEL, NULL));
	close(dev);
	for (i = 0; i < RACE_INSTANCES; i++)
		EXPECT_EQ(0, remove_instance(names[i]));
}

int main(int argc, char **argv)
{
	return lu_main(argc, argv);
}
