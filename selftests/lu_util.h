/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by liveupdate's C selftests: raw ioctl wrappers that
 * return -errno, memfd builders and the data patterns the staged tests
 * write in one kernel and check in the next.
 */
#ifndef LU_UTIL_H
#define LU_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mman.h>
#include <sys/swap.h>
#include <unistd.h>

#include "../kernel/include/uapi/linux/liveupdate.h"

#define LU_DEVICE "/dev/liveupdate"

/* The process's open fds, not counting the one used to count them. */
static inline int lu_count_fds(void)
{
	DIR *dir = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	if (!dir)
		return -1;
	while ((de = readdir(dir)))
		n += de->d_name[0] != '.';
	closedir(dir);
	return n - 1;
}

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

static inline int lu_preserve_deps(int session, int fd, uint64_t token,
				   const uint64_t *deps, uint32_t nr_deps)
{
	struct liveupdate_session_preserve_fd_deps arg = {
		.size = sizeof(arg), .fd = fd, .token = token,
		.deps = (uintptr_t)deps, .nr_deps = nr_deps,
	};

	return lu_ioctl(session, LIVEUPDATE_SESSION_PRESERVE_FD_DEPS, &arg);
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

static inline int lu_get_state(int dev, struct liveupdate_get_state *st)
{
	memset(st, 0, sizeof(*st));
	st->size = sizeof(*st);
	return lu_ioctl(dev, LIVEUPDATE_IOCTL_GET_STATE, st);
}

/* Sends @event; the kernel's reply lands in @reply if it is not NULL. */
static inline int lu_event(int dev, uint32_t event,
			   struct liveupdate_set_event *reply)
{
	struct liveupdate_set_event arg = { .size = sizeof(arg), .event = event };
	int err = lu_ioctl(dev, LIVEUPDATE_IOCTL_SET_EVENT, &arg);

	if (reply)
		*reply = arg;
	return err;
}

/* The state as /sys/class/misc/liveupdate/state reads, without newline. */
static inline const char *lu_sysfs_state(void)
{
	static char buf[32];
	int fd = open("/sys/class/misc/liveupdate/state", O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);

	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return "(unreadable)";
	buf[n] = 0;
	buf[strcspn(buf, "\n")] = 0;
	return buf;
}

/*
 * The table address in the root that KHO hands to the next kernel (its
 * debugfs copy): 0 while nothing is published, -1 if unreadable.
 */
static inline long long lu_kho_published_table(void)
{
	uint64_t root[4];	/* the first fields of struct lu_ser_root */
	int fd = open("/sys/kernel/debug/kho/out/sub_fdts/liveupdate-module", O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, root, sizeof(root));

	if (fd >= 0)
		close(fd);
	return n == sizeof(root) ? (long long)root[2] : -1;
}

/* Writes @val to the file at @path (sysfs, procfs); returns -errno. */
static inline int lu_write_str(const char *path, const char *val)
{
	ssize_t n = strlen(val);
	int fd, err = 0;

	fd = open(path, O_WRONLY);
	if (fd < 0)
		return -errno;
	if (write(fd, val, n) != n)
		err = -errno;
	close(fd);
	return err;
}

/* How many lines of the kernel log contain @needle, or -1. */
static inline int lu_dmesg_count(const char *needle)
{
	int size = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0);
	char *buf, *line, *rest;
	int n, count = 0;

	if (size <= 0)
		return -1;
	buf = malloc(size + 1);
	if (!buf)
		return -1;
	n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, size);
	if (n < 0) {
		free(buf);
		return -1;
	}
	buf[n] = 0;
	for (line = strtok_r(buf, "\n", &rest); line; line = strtok_r(NULL, "\n", &rest))
		count += !!strstr(line, needle);
	free(buf);
	return count;
}

/* Sets one of the module's parameters (test knobs); returns -errno. */
static inline int lu_set_param_str(const char *name, const char *val)
{
	char path[128];

	snprintf(path, sizeof(path), "/sys/module/liveupdate/parameters/%s", name);
	return lu_write_str(path, val);
}

static inline int lu_set_param(const char *name, unsigned long long value)
{
	char val[32];

	snprintf(val, sizeof(val), "%llu", value);
	return lu_set_param_str(name, val);
}

/* The guest's scratch disk (qemu/run.py), swap for the tests that need it. */
#define LU_SWAP_DEVICE	"/dev/vda"

/* Makes the scratch disk swap and turns it on. Return: 0, or -1. */
static inline int lu_swap_on(void)
{
	if (system("mkswap " LU_SWAP_DEVICE " >/dev/null"))
		return -1;
	return swapon(LU_SWAP_DEVICE, 0);
}

/* A value of /proc/meminfo in kB, e.g. lu_meminfo_kb("MemFree:"). */
static inline long lu_meminfo_kb(const char *key)
{
	char line[128];
	long kb = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key)))
			kb = atol(line + strlen(key));
	fclose(f);
	return kb;
}

/* Free memory including the per-CPU free lists, in kB. */
static inline long lu_free_kb(void)
{
	char line[256];
	long pcp_pages = 0, n;
	FILE *f = fopen("/proc/zoneinfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, " count: %ld", &n) == 1)
			pcp_pages += n;
	fclose(f);
	return lu_meminfo_kb("MemFree:") + pcp_pages * 4;
}

/* A counter of /proc/vmstat, e.g. "nr_foll_pin_acquired". */
static inline long long lu_vmstat(const char *key)
{
	char name[64];
	long long v, found = -1;
	FILE *f = fopen("/proc/vmstat", "r");

	if (!f)
		return -1;
	while (fscanf(f, "%63s %lld", name, &v) == 2)
		if (!strcmp(name, key))
			found = v;
	fclose(f);
	return found;
}

/*
 * Pages pinned (FOLL_PIN) and not released yet, system-wide. The counters
 * are per-CPU until folded: fold them first, else the difference can be
 * off by a few pages either way.
 */
static inline long long lu_pins_held(void)
{
	int fd = open("/proc/sys/vm/stat_refresh", O_WRONLY | O_CLOEXEC);

	if (fd >= 0) {
		if (write(fd, "1", 1) < 0)
			perror("vm.stat_refresh");
		close(fd);
	}
	return lu_vmstat("nr_foll_pin_acquired") - lu_vmstat("nr_foll_pin_released");
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

/* A new memfd holding @size bytes of pattern @seed, or -1. */
static inline int lu_pattern_memfd(size_t size, uint32_t seed)
{
	int fd = memfd_create("lu-pattern", MFD_CLOEXEC);

	if (fd >= 0 && size && lu_pattern_write(fd, seed, 0, size)) {
		close(fd);
		return -1;
	}
	return fd;
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
