/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by liveupdate's C selftests: raw ioctl wrappers that
 * return -errno, memfd builders and the data patterns the staged tests
 * write in one kernel and check in the next.
 */
#ifndef LU_UTIL_H
#define LU_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../kernel/include/uapi/linux/liveupdate.h"

#define LU_DEVICE "/dev/liveupdate"

static inline int lu_ioctl(int fd, unsigned long cmd, void *arg)
{
	return ioctl(fd, cmd, arg) < 0 ? -errno : 0;
}

static inline int lu_create_session(int dev, const char *name)
{
	struct liveupdate_ioctl_create_session arg = { .size = sizeof(arg) };
	int err;

	snprintf((char *)arg.name, sizeof(arg.name), "%s", name);
	err = lu_ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, &arg);
	return err ? err : arg.fd;
}

static inline int lu_retrieve_session(int dev, const char *name)
{
	struct liveupdate_ioctl_retrieve_session arg = { .size = sizeof(arg) };
	int err;

	snprintf((char *)arg.name, sizeof(arg.name), "%s", name);
	err = lu_ioctl(dev, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, &arg);
	return err ? err : arg.fd;
}

static inline int lu_preserve(int session, int fd, uint64_t token)
{
	struct liveupdate_session_preserve_fd arg = {
		.size = sizeof(arg), .fd = fd, .token = token,
	};

	return lu_ioctl(session, LIVEUPDATE_SESSION_PRESERVE_FD, &arg);
}

static inline int lu_retrieve(int session, uint64_t token)
{
	struct liveupdate_session_retrieve_fd arg = {
		.size = sizeof(arg), .fd = -1, .token = token,
	};
	int err;

	err = lu_ioctl(session, LIVEUPDATE_SESSION_RETRIEVE_FD, &arg);
	return err ? err : arg.fd;
}

static inline int lu_finish(int session)
{
	struct liveupdate_session_finish arg = { .size = sizeof(arg) };

	return lu_ioctl(session, LIVEUPDATE_SESSION_FINISH, &arg);
}

/* Byte @off of the pattern named @seed: cheap, position-dependent. */
static inline uint8_t lu_pattern_byte(uint32_t seed, uint64_t off)
{
	uint64_t x = (off / 8) * 0x9E3779B97F4A7C15ULL + seed;

	x ^= x >> 29;
	x *= 0xBF58476D1CE4E5B9ULL;
	x ^= x >> 32;
	return (uint8_t)(x >> (8 * (off % 8)));
}

static inline void lu_pattern_fill(uint8_t *buf, size_t len, uint32_t seed,
				   uint64_t off)
{
	size_t i;

	for (i = 0; i < len; i++)
		buf[i] = lu_pattern_byte(seed, off + i);
}

/* Returns the first offset in [off, off + len) that differs, or -1. */
static inline long long lu_pattern_check(const uint8_t *buf, size_t len,
					 uint32_t seed, uint64_t off)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (buf[i] != lu_pattern_byte(seed, off + i))
			return off + i;
	return -1;
}

/* Writes the pattern at [off, off + len) of @fd. */
static inline int lu_pattern_write(int fd, uint32_t seed, off_t off,
				   size_t len)
{
	uint8_t buf[65536];

	while (len) {
		size_t n = len < sizeof(buf) ? len : sizeof(buf);

		lu_pattern_fill(buf, n, seed, off);
		if (pwrite(fd, buf, n, off) != (ssize_t)n)
			return -errno;
		off += n;
		len -= n;
	}
	return 0;
}

/* Checks [off, off + len) of @fd; returns -1 if all match, else the offset. */
static inline long long lu_pattern_verify(int fd, uint32_t seed, off_t off,
					  size_t len)
{
	uint8_t buf[65536];

	while (len) {
		size_t n = len < sizeof(buf) ? len : sizeof(buf);
		long long bad;

		if (pread(fd, buf, n, off) != (ssize_t)n)
			return off;
		bad = lu_pattern_check(buf, n, seed, off);
		if (bad >= 0)
			return bad;
		off += n;
		len -= n;
	}
	return -1;
}

/*
 * Keeps the calling process's fds open until the kexec: forks a child in
 * its own session that sleeps forever. Session fds must stay open for
 * their files to be carried.
 */
static inline int lu_hold_fds_until_kexec(void)
{
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		setsid();
		close(0);
		close(1);
		close(2);
		for (;;)
			pause();
	}
	return 0;
}

#endif /* LU_UTIL_H */
