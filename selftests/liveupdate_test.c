// SPDX-License-Identifier: GPL-2.0
/*
 * liveupdate in one kernel: the device, session and preserve errors, each
 * with its errno, and that no failing call leaves an fd or state behind.
 */
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "lu_util.h"
#include "lu_stage.h"

static int new_memfd(size_t size)
{
	int fd = memfd_create("lu-err", MFD_CLOEXEC);

	if (fd >= 0 && size && ftruncate(fd, size)) {
		close(fd);
		return -1;
	}
	return fd;
}

FIXTURE(dev) {
	int dev;
	int session;
};

FIXTURE_SETUP(dev)
{
	self->dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, self->dev);
	self->session = lu_create_session(self->dev, "errors");
	ASSERT_LE(0, self->session);
}

FIXTURE_TEARDOWN(dev)
{
	close(self->session);
	close(self->dev);
}

TEST(device_node)
{
	struct stat st;
	int a, b;

	ASSERT_EQ(0, stat(LU_DEVICE, &st));
	EXPECT_TRUE(S_ISCHR(st.st_mode));
	EXPECT_EQ(0600U, st.st_mode & 0777);

	a = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, a);
	b = open(LU_DEVICE, O_RDWR);
	EXPECT_EQ(-1, b);
	EXPECT_EQ(EBUSY, errno);
	close(a);
	b = open(LU_DEVICE, O_RDWR);
	EXPECT_LE(0, b);
	close(b);
}

/*
 * No capability is checked: the node's 0600 keeps other users out, and a
 * session fd that root hands to another user works for that user, as
 * any fd does.
 */
TEST_F(dev, unprivileged_user)
{
	int status, memfd;
	pid_t pid;

	close(self->dev);	/* the device opens once at a time */
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		if (setgid(1000) || setuid(1000))
			_exit(10);
		if (open(LU_DEVICE, O_RDWR) >= 0 || errno != EACCES)
			_exit(11);
		memfd = memfd_create("user", MFD_CLOEXEC);
		if (memfd < 0 || lu_preserve(self->session, memfd, 7))
			_exit(12);
		_exit(0);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_EQ(0, WEXITSTATUS(status));
	self->dev = open(LU_DEVICE, O_RDWR);
	ASSERT_LE(0, self->dev);
	/* The user's memfd is in root's session. */
	EXPECT_EQ(-EEXIST, lu_preserve(self->session, self->dev, 7));
}

TEST_F(dev, session_fd)
{
	struct liveupdate_session_get_name arg = { .size = sizeof(arg) };
	char path[64], link[128];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", self->session);
	n = readlink(path, link, sizeof(link) - 1);
	ASSERT_LT(0, n);
	link[n] = 0;
	EXPECT_STREQ("anon_inode:[luo_session] errors", link);
	EXPECT_EQ(FD_CLOEXEC, fcntl(self->session, F_GETFD));

	ASSERT_EQ(0, lu_ioctl(self->session, LIVEUPDATE_SESSION_GET_NAME, &arg));
	EXPECT_STREQ("errors", (char *)arg.name);
	arg.reserved = 1;
	EXPECT_EQ(-EINVAL, lu_ioctl(self->session, LIVEUPDATE_SESSION_GET_NAME, &arg));
}

TEST_F(dev, session_names)
{
	struct liveupdate_ioctl_create_session arg = { .size = sizeof(arg) };
	int fds = lu_count_fds();
	int again;

	EXPECT_EQ(-EINVAL, lu_create_session(self->dev, ""));
	memset(arg.name, 'x', sizeof(arg.name));
	EXPECT_EQ(-EINVAL, lu_ioctl(self->dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &arg));
	EXPECT_EQ(-EEXIST, lu_create_session(self->dev, "errors"));
	EXPECT_EQ(-ENOENT, lu_retrieve_session(self->dev, "errors"));
	EXPECT_EQ(-ENOENT, lu_retrieve_session(self->dev, "no-such-session"));
	EXPECT_EQ(-EINVAL, lu_retrieve_session(self->dev, ""));
	EXPECT_EQ(fds, lu_count_fds());

	/* The longest name fits; closing a session frees its name. */
	memset(arg.name, 'y', sizeof(arg.name) - 1);
	arg.name[sizeof(arg.name) - 1] = 0;
	ASSERT_EQ(0, lu_ioctl(self->dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &arg));
	ASSERT_EQ(0, close(self->session));
	again = lu_create_session(self->dev, "errors");
	ASSERT_LE(0, again);
	self->session = again;
	close(arg.fd);
}

TEST_F(dev, ioctl_decoding)
{
	struct {
		struct liveupdate_ioctl_create_session arg;
		char tail[16];
	} big = { .arg = { .size = sizeof(big), .name = "big" } };
	struct liveupdate_ioctl_create_session arg = { .name = "short" };
	struct liveupdate_session_preserve_fd pres = { .size = sizeof(pres) };

	/* Unknown numbers, on the device and on a session. */
	EXPECT_EQ(-EINVAL, lu_ioctl(self->dev, _IO(LIVEUPDATE_IOCTL_TYPE, 0x02), &arg));
	EXPECT_EQ(-EINVAL, lu_ioctl(self->dev, _IO(LIVEUPDATE_IOCTL_TYPE, 0x40), &arg));
	EXPECT_EQ(-EINVAL, lu_ioctl(self->session, _IO(LIVEUPDATE_IOCTL_TYPE, 0x44), &pres));
	EXPECT_EQ(-EINVAL, lu_ioctl(self->session, _IO(LIVEUPDATE_IOCTL_TYPE, 0x00), &pres));
	/* A known number with direction and size bits. */
	EXPECT_EQ(-ENOTTY, lu_ioctl(self->dev,
				    _IOWR(LIVEUPDATE_IOCTL_TYPE, 0x00, struct liveupdate_ioctl_create_session),
				    &arg));
	/* Too short, then longer with a non-zero tail, then a zero tail. */
	arg.size = offsetof(struct liveupdate_ioctl_create_session, name);
	EXPECT_EQ(-EINVAL, lu_ioctl(self->dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &arg));
	big.tail[7] = 1;
	EXPECT_EQ(-E2BIG, lu_ioctl(self->dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &big));
	big.tail[7] = 0;
	ASSERT_EQ(0, lu_ioctl(self->dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &big));
	close(big.arg.fd);
	/* Unreadable argument. */
	EXPECT_EQ(-EFAULT, lu_ioctl(self->dev, LIVEUPDATE_IOCTL_CREATE_SESSION, NULL));
	EXPECT_EQ(-EFAULT, lu_ioctl(self->session, LIVEUPDATE_SESSION_PRESERVE_FD, (void *)8));
}

TEST_F(dev, outgoing_session_rejects_incoming_commands)
{
	struct liveupdate_session_finish fin = { .size = sizeof(fin) };

	EXPECT_EQ(-EINVAL, lu_retrieve(self->session, 1));
	EXPECT_EQ(-EINVAL, lu_ioctl(self->session, LIVEUPDATE_SESSION_FINISH, &fin));
}

TEST_F(dev, preserve_bad_fds)
{
	int pipefd[2], sock, file, null, fds;

	ASSERT_EQ(0, pipe(pipefd));
	sock = socket(AF_UNIX, SOCK_STREAM, 0);
	ASSERT_LE(0, sock);
	file = open("/tmp/lu-regular-file", O_RDWR | O_CREAT | O_TRUNC, 0600);
	ASSERT_LE(0, file);
	null = open("/dev/null", O_RDWR);
	ASSERT_LE(0, null);
	fds = lu_count_fds();

	EXPECT_EQ(-EBADF, lu_preserve(self->session, -1, 1));
	EXPECT_EQ(-EBADF, lu_preserve(self->session, 1000, 1));
	EXPECT_EQ(-ENOENT, lu_preserve(self->session, pipefd[0], 1));
	EXPECT_EQ(-ENOENT, lu_preserve(self->session, sock, 1));
	EXPECT_EQ(-ENOENT, lu_preserve(self->session, file, 1));
	EXPECT_EQ(-ENOENT, lu_preserve(self->session, null, 1));
	EXPECT_EQ(-ENOENT, lu_preserve(self->session, self->dev, 1));
	EXPECT_EQ(-ENOENT, lu_preserve(self->session, self->session, 1));
	EXPECT_EQ(fds, lu_count_fds());
	unlink("/tmp/lu-regular-file");
}

TEST_F(dev, preserve_tokens_and_sharing)
{
	int a = new_memfd(4096), b = new_memfd(4096);
	int other;

	ASSERT_LE(0, a);
	ASSERT_LE(0, b);
	ASSERT_EQ(0, lu_preserve(self->session, a, 7));
	EXPECT_EQ(-EEXIST, lu_preserve(self->session, b, 7));
	/* One file, one session, one token. */
	EXPECT_EQ(-EBUSY, lu_preserve(self->session, a, 8));
	other = lu_create_session(self->dev, "other");
	ASSERT_LE(0, other);
	EXPECT_EQ(-EBUSY, lu_preserve(other, a, 7));
	/* Tokens are per session. */
	EXPECT_EQ(0, lu_preserve(other, b, 7));

	/* Closing the session releases the file: it can be preserved again. */
	ASSERT_EQ(0, close(self->session));
	self->session = lu_create_session(self->dev, "errors");
	ASSERT_LE(0, self->session);
	EXPECT_EQ(0, lu_preserve(self->session, a, 7));
	close(other);
	close(a);
	close(b);
}

TEST_F(dev, preserved_memfd_size_is_frozen)
{
	int fd = new_memfd(8192);
	char c = 'x';

	ASSERT_LE(0, fd);
	ASSERT_EQ(0, lu_preserve(self->session, fd, 1));
	EXPECT_EQ(-1, ftruncate(fd, 16384));
	EXPECT_EQ(EPERM, errno);
	EXPECT_EQ(-1, ftruncate(fd, 0));
	EXPECT_EQ(EPERM, errno);
	EXPECT_EQ(-1, pwrite(fd, &c, 1, 8192));
	EXPECT_EQ(EPERM, errno);
	/* Writes within the size still work and are carried. */
	EXPECT_EQ(1, pwrite(fd, &c, 1, 100));

	ASSERT_EQ(0, close(self->session));
	self->session = -1;
	EXPECT_EQ(0, ftruncate(fd, 16384));
	close(fd);
}

TEST_F(dev, preserve_keeps_file_after_close)
{
	long shmem_before, shmem_kept;
	int fd = new_memfd(0);

	ASSERT_LE(0, fd);
	shmem_before = lu_meminfo_kb("Shmem:");
	ASSERT_EQ(0, lu_pattern_write(fd, 5, 0, 16 << 20));
	ASSERT_EQ(0, lu_preserve(self->session, fd, 1));
	/* The session holds its own reference: the caller may close. */
	ASSERT_EQ(0, close(fd));
	shmem_kept = lu_meminfo_kb("Shmem:") - shmem_before;
	EXPECT_LE(15 << 10, shmem_kept) TH_LOG("Shmem kept: %ld kB", shmem_kept);
	/* Closing the session lets the file, and its 16 MiB, go. */
	close(self->session);
	self->session = lu_create_session(self->dev, "errors");
	ASSERT_LE(0, self->session);
	EXPECT_GT(1 << 10, lu_meminfo_kb("Shmem:") - shmem_before);
}

/*
 * Fills, optionally preserves and unpreserves, and frees a 64 MiB memfd
 * @rounds times; returns how far MemFree fell, in kB. Failures abort the test.
 */
static long memfree_drop(struct __test_metadata *_metadata,
			 struct _test_data_dev *self, bool preserve, int rounds)
{
	static char chunk[1 << 20];
	long before = lu_free_kb();
	int i, j, fd;

	memset(chunk, 0xab, sizeof(chunk));
	for (i = 0; i < rounds; i++) {
		fd = new_memfd(0);
		ASSERT_LE(0, fd);
		for (j = 0; j < 64; j++)
			ASSERT_EQ((ssize_t)sizeof(chunk), write(fd, chunk, sizeof(chunk)));
		if (preserve)
			ASSERT_EQ(0, lu_preserve(self->session, fd, i));
		/* Closing the session unpins the pages; closing the memfd frees them. */
		close(self->session);
		close(fd);
		self->session = lu_create_session(self->dev, "errors");
		ASSERT_LE(0, self->session);
	}
	return before - lu_free_kb();
}

TEST_F(dev, unpreserve_returns_memory)
{
	long plain, preserved;

	/*
	 * The kernel keeps some freed pages in caches (per-CPU lists counted
	 * as free): compare with a run without liveupdate.
	 */
	memfree_drop(_metadata, self, false, 1);	/* warms the caches up */
	plain = memfree_drop(_metadata, self, false, 4);
	preserved = memfree_drop(_metadata, self, true, 4);
	TH_LOG("MemFree fell %ld kB without preservation, %ld kB with", plain, preserved);
	/*
	 * Either figure may be negative when caches shrink meanwhile; 256 MiB
	 * went through, and a leak of pins or KHO blocks would keep all of it.
	 */
	EXPECT_LT(preserved - plain, 32 * 1024);
}

TEST_F(dev, module_stays_while_in_use)
{
	EXPECT_EQ(-1, syscall(SYS_delete_module, "liveupdate", O_NONBLOCK));
	EXPECT_EQ(EWOULDBLOCK, errno);
}

int main(int argc, char **argv)
{
	return lu_main(argc, argv);
}
